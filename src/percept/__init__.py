"""percept: perceptual image compression with diffusion priors.

The library behind the percept study book: real codecs with real bitstreams, diffusion denoisers and
samplers, the training-free enhancer (fast / medium / slow presets), the latent fusion module,
metrics, and the project's own small models.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "enhance", "calibrate_sigma"]


def __getattr__(name: str):
    # Lazy so that `import percept` (and the CLI's start-up) stays light.
    if name == "enhance":
        from percept.enhance import enhance

        return enhance
    if name == "calibrate_sigma":
        from percept.calibrate import calibrate_sigma

        return calibrate_sigma
    raise AttributeError(f"module 'percept' has no attribute {name!r}")
