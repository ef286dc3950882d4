"""percept: perceptual image compression with diffusion priors.

The library behind the percept study book: real codecs with real bitstreams, diffusion denoisers and
samplers, the training-free enhancer (fast / medium / slow presets), the latent fusion module,
metrics, and the project's own small models.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The public names, each from the layer that defines it; imported on first use so that
# `import percept` (and the CLI's start-up) stays light.
_EXPORTS = {
    "enhance": "percept.enhancer.pipeline",
    "Enhancer": "percept.enhancer.pipeline",
    "EnhancerConfig": "percept.enhancer.presets",
    "calibrate_sigma": "percept.enhancer.calibrate",
    "load_fusion": "percept.fusion.module",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'percept' has no attribute {name!r}")
