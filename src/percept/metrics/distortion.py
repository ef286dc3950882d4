"""Full-reference distortion metrics, per image: PSNR, MS-SSIM, SSIMULACRA 2.

All take ``x`` (reference) and ``y`` (test) as [B,3,H,W] (or [3,H,W]) tensors in [0,1] and return a
float64 tensor of B values, one per image, so that a dataset mean is the mean of per-image values
(CompressAI's convention for its published tables). Both images are first rounded to the 8-bit grid,
because what a user sees is a PNG: a decoder's sub-8-bit output must not earn PSNR it cannot deliver.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from percept.core.images import quantize, tensor_to_pil
from percept.errors import MetricUnavailable

SSIMULACRA2_REQUIREMENT = "ssimulacra2==0.3.0"


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if y.dim() == 3:
        y = y.unsqueeze(0)
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"expected two [B,3,H,W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return quantize(x.detach().double()), quantize(y.detach().double())


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image on the 8-bit grid, in [0,1] units squared."""
    x, y = _pair(x, y)
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (peak 1.0 = 255 on the 8-bit grid); inf if identical."""
    err = mse(x, y)
    return torch.where(err > 0, -10.0 * torch.log10(err), torch.full_like(err, float("inf")))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003) per image, in [0,1], higher is better.

    Computed by ``pytorch_msssim`` (the implementation CompressAI's tables use): 11x11 Gaussian window
    with sigma 1.5, five scales with the paper's weights, 2x2 average pooling between scales, SSIM
    averaged over RGB channels. Needs a short side above 160 pixels (4 downsamplings of an 11-tap
    window); CompressAI reports it also as -10 log10(1 - MS-SSIM) dB.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    x, y = _pair(x, y)
    if min(x.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs a short side above 160 pixels, got {tuple(x.shape[-2:])}")
    return _ms_ssim(x, y, data_range=1.0, size_average=False).double()


def ssimulacra2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIMULACRA 2 per image (Cloudinary / libjxl, 2022): 100 = identical, 90 very high, 70 high,
    50 medium, 30 low quality; can be negative for severe artefacts. Higher is better.

    A weight-free perceptual full-reference metric: multi-scale SSIM and edge-difference maps (ringing
    vs blurring, separately) computed in the XYB colour space, pooled with 1- and 4-norms and mapped to
    a score by weights fitted to human opinion scores. Unlike PSNR it penalises both blur and ringing
    the way people do; unlike LPIPS it needs no network weights. It is still a fidelity metric: a
    realistic but different texture scores worse than a blur of similar error, so it does not replace a
    distribution-level realism metric (FID, SWD). Computed with the PyPI package ``ssimulacra2``
    (a pure numpy/scipy port, much slower than PSNR).
    """
    try:
        from ssimulacra2 import compute_ssimulacra2
    except ImportError:
        raise MetricUnavailable(
            f"SSIMULACRA 2 needs the ssimulacra2 package: pip install '{SSIMULACRA2_REQUIREMENT}'"
        ) from None
    x, y = _pair(x, y)
    scores = []
    for a, b in zip(x, y):
        # The package reads images with Pillow; lossless in-memory PNGs keep the 8-bit values exact.
        fa, fb = io.BytesIO(), io.BytesIO()
        tensor_to_pil(a).save(fa, format="PNG")
        tensor_to_pil(b).save(fb, format="PNG")
        fa.seek(0)
        fb.seek(0)
        scores.append(float(compute_ssimulacra2(fa, fb)))
    return torch.from_numpy(np.asarray(scores, dtype=np.float64))
