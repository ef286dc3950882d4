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

from percept.errors import MetricUnavailable
from percept.metrics.bjontegaard import bd_metric, bd_rate
from percept.metrics.deep import (
    fid,
    fid256_patches,
    inception_features,
    kid,
    lpips,
    weights_path,
)
from percept.metrics.distortion import ms_ssim, mse, psnr, ssimulacra2
from percept.metrics.realism import (
    SWDGain,
    SWDResult,
    frechet_distance,
    kernel_distance,
    patch_kid,
    swd,
    swd_gain,
    swd_gains,
    swd_many,
)
from percept.metrics.timing import Timing, time_decode

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
    "swd_gains",
    "swd_many",
    "time_decode",
    "lpips",
    "fid",
    "kid",
    "inception_features",
    "fid256_patches",
    "weights_path",
]
