"""Noise-level schedules for the samplers: descending sigmas that end in an explicit 0.

The enhancer starts at a partial noise level sigma_start (paper eq. 9-10), so a schedule here is
the tail of a diffusion schedule: `steps` noise levels from sigma_start down to sigma_min, then 0.
Each of the `steps` levels costs one network evaluation; the final 0 costs none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SIGMA_MIN = 0.002  # EDM's smallest noise level ([-1,1] units)


def karras_sigmas(
    steps: int, sigma_start: float, sigma_min: float = SIGMA_MIN, rho: float = 7.0
) -> Tensor:
    """EDM's schedule (Karras et al. 2022, eq. 5) from sigma_start to sigma_min, then 0.

    sigma_i = (sigma_start^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_start^(1/rho)))^rho, i < n.
    rho = 7 spends the steps where the error is made: at small noise levels. With steps == 1 the
    schedule is [sigma_start, 0] (one denoiser call). float64, shape [steps + 1].
    """
    _check(steps, sigma_start)
    if steps == 1:
        return torch.tensor([sigma_start, 0.0], dtype=torch.float64)
    sigma_min = _floor(sigma_start, sigma_min)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_start ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_start, sigma_min  # exact ends, free of root-and-power rounding
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def loglinear_sigmas(steps: int, sigma_start: float, sigma_min: float = SIGMA_MIN) -> Tensor:
    """Geometric spacing from sigma_start to sigma_min, then 0 (k-diffusion's `get_sigmas_exponential`)."""
    _check(steps, sigma_start)
    if steps == 1:
        return torch.tensor([sigma_start, 0.0], dtype=torch.float64)
    lo = math.log10(_floor(sigma_start, sigma_min))
    sigmas = torch.logspace(math.log10(sigma_start), lo, steps, dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def halving_sigmas(steps: int, sigma_start: float) -> Tensor:
    """[sigma, sigma/2, ..., sigma/2^(steps-1), 0]: multistep consistency sampling from partial noise.

    A consistency model maps any sigma straight to 0, so a schedule whose extra levels sit near
    sigma_min (as Karras' does for few steps) re-noises by almost nothing and repeats step one.
    Halving re-noises at levels that still let each extra step redraw detail (Song et al. 2023
    choose their second level by search; halving is the simple default for a sigma <= ~2 start).
    """
    _check(steps, sigma_start)
    levels = [sigma_start / 2**i for i in range(steps)]
    return torch.tensor([*levels, 0.0], dtype=torch.float64)


def nfe(sigmas: Tensor) -> int:
    """Network evaluations a first-order sampler spends on this schedule: one per nonzero sigma."""
    return int((sigmas > 0).sum())


def _floor(sigma_start: float, sigma_min: float) -> float:
    # A start at or below the floor would repeat noise levels (zero-length steps); go a decade lower.
    return sigma_min if sigma_start > sigma_min else sigma_start / 10


def _check(steps: int, sigma_start: float) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not sigma_start > 0:
        raise ValueError(f"sigma_start must be > 0, got {sigma_start}")
