"""Metrics for rate, distortion, perception and speed.

Per-image, full-reference metrics take two tensors ``x, y`` of shape [B,3,H,W] in [0,1] and return a
tensor of B values (``psnr``, ``ms_ssim``, ``ssimulacra2``, ``lpips``). Distribution-level metrics take
two lists of images (the reference set and the test set; sizes may differ between images) and return
one number or a mean with its spread (``swd``, ``patch_kid``, ``fid``, ``kid``). Curve-level metrics
(``bd_rate``, ``bd_metric``) take rate/quality points. ``time_decode`` times a decoder.

Metrics that need pretrained weights (LPIPS, FID, KID) live in ``percept.metrics.deep`` and raise
``MetricUnavailable`` when their weight file is neither cached nor downloadable; the weight-free
ones (PSNR, MS-SSIM, SSIMULACRA 2, SWD, patch KID) always work, so every offline table still has a
distortion, a perceptual full-reference and a realism column.
"""

from __future__ import annotations

from percept.errors import PerceptError


class MetricUnavailable(PerceptError):
    """A metric cannot be computed here (missing weights or package); the message says what to supply."""


from percept.metrics.bjontegaard import bd_metric, bd_rate  # noqa: E402
from percept.metrics.distortion import ms_ssim, mse, psnr, ssimulacra2  # noqa: E402
from percept.metrics.realism import (  # noqa: E402
    SWDGain,
    SWDResult,
    frechet_distance,
    kernel_distance,
    patch_kid,
    swd,
    swd_gain,
)
from percept.metrics.timing import Timing, time_decode  # noqa: E402

_DEEP = ("lpips", "fid", "kid", "inception_features", "fid256_patches", "weights_path")

__all__ = [
    "MetricUnavailable",
    "SWDGain",
    "SWDResult",
    "Timing",
    "bd_metric",
    "bd_rate",
    "frechet_distance",
    "kernel_distance",
    "ms_ssim",
    "mse",
    "patch_kid",
    "psnr",
    "ssimulacra2",
    "swd",
    "swd_gain",
    "time_decode",
    *_DEEP,
]


def __getattr__(name: str):
    # Lazy: the deep metrics import lpips and pytorch-fid, which the weight-free paths do not need.
    if name in _DEEP:
        from percept.metrics import deep

        return getattr(deep, name)
    raise AttributeError(f"module 'percept.metrics' has no attribute {name!r}")
