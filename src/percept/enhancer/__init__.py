"""Paper 1, the training-free enhancer: a decoded image is noised to sigma and denoised by a prior.

`presets` holds the enhancer settings as data, `pipeline` the sampling (`enhance`), `calibrate` the
sigma rule and its table, `signalling` the per-image sigma carried in the file, `interpolate` the
convex-interpolation baseline it is compared with.
"""

from percept.enhancer.pipeline import enhance

__all__ = ["enhance"]
