"""percept: perceptual image compression with diffusion priors.

The library behind the percept study book: real codecs with real bitstreams, diffusion denoisers and
samplers, the training-free enhancer (fast / medium / slow presets), the latent fusion module,
metrics, and the project's own small models.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "enhance", "calibrate_sigma"]


def __getattr__(name: str):
    # Lazy so that `import percept` (and the CLI's start-up) stays light.
    # The enhancer lives in percept.enhancer.pipeline (not percept.enhance) so that importing the module never
    # shadows the function `percept.enhance`.
    if name in ("enhance", "calibrate_sigma"):
        module = importlib.import_module(
            "percept.enhancer.pipeline" if name == "enhance" else "percept.enhancer.calibrate"
        )
        fn = getattr(module, name)
        globals()[name] = fn
        return fn
    raise AttributeError(f"module 'percept' has no attribute {name!r}")
