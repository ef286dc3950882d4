"""The denoiser contract: every model is a callable D(x, sigma) -> estimate of the clean image.

Images are in [-1, 1] and x = x0 + sigma * eps (the EDM convention). Beyond the call, a denoiser
may declare, as attributes:

- `is_consistency_model` (bool): a one-step model f(x, sigma) ~ x0 (the fast presets need one);
- `sigma_max` (float): the top noise level it was trained or distilled on;
- `sample_size` (int): the fixed input size of a model that is not fully convolutional;
- `denoiser`: the model a wrapper wraps (tiling, projection), through which the above are read.

The helpers here read those declarations, looking through wrappers, so no caller needs to know
which class a model is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor: ...


def _declared(denoiser, name: str):
    """The first value of attribute `name` found on the denoiser or the models it wraps."""
    while denoiser is not None:
        value = getattr(denoiser, name, None)
        if value is not None:
            return value
        denoiser = getattr(denoiser, "denoiser", None)
    return None


def is_consistency_model(denoiser) -> bool:
    """Whether the denoiser is a one-step consistency model (declared `is_consistency_model`)."""
    return bool(_declared(denoiser, "is_consistency_model"))


def trained_sigma_max(denoiser) -> float | None:
    """The top noise level a model was trained or distilled on; None when not declared."""
    top = _declared(denoiser, "sigma_max")
    return float(top) if isinstance(top, (int, float)) else None


class ProjectedDenoiser(torch.nn.Module):
    """D'(x, sigma) = P(D(x, sigma)): a denoiser whose clean-image estimates are projected by
    `project` (a function of [B,C,H,W] images in [0,1]; the denoiser works in [-1,1])."""

    def __init__(self, denoiser, project: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.denoiser, self.project = denoiser, project
        self.sigma_min = getattr(denoiser, "sigma_min", 0.0)

    def forward(self, x: Tensor, sigma) -> Tensor:
        d = self.denoiser(x, sigma).float()
        return self.project(((d + 1) / 2).clamp(0, 1)) * 2 - 1
