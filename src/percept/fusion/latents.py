"""The latents a hyperprior decoder sees, computed exactly as CompressAI's `decompress` computes them.

Paper 2's module works on the decoded latents y_hat of a frozen learned codec. For a mean-scale
hyperprior (Minnen et al. 2018) the decoder knows three tensors at the latent resolution (H/16):
y_hat, and the hyperprior's means and scales. `from_image` gives them for training (no entropy
coding: y_hat = round(y - means) + means is what the coder transmits, so the two routes agree
exactly); `from_strings` gives them from a real bitstream; `synthesize` is the frozen g_s.
A scale hyperprior (Balle et al. 2018) has no means: they are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from percept.errors import CodecError


@dataclass(frozen=True)
class DecodedLatents:
    """What the decoder holds before synthesis: y_hat and its conditional means and scales."""

    y_hat: Tensor
    means: Tensor
    scales: Tensor

    def condition(self) -> Tensor:
        """The fusion network's conditioning input: y_hat, means and log-scales stacked."""
        return torch.cat([self.y_hat, self.means, self.scales.clamp_min(0.11).log()], dim=1)


def check_hyperprior(model: torch.nn.Module) -> None:
    """One line for a model paper 2's module cannot wrap (it needs g_a, g_s, h_a, h_s)."""
    missing = [name for name in ("g_a", "g_s", "h_a", "h_s") if not hasattr(model, name)]
    if missing:
        raise CodecError(
            f"{type(model).__name__} has no {', '.join(missing)}: the latent fusion module needs a "
            "hyperprior codec (g_a, g_s, h_a, h_s)"
        )


def _params(model: torch.nn.Module, z_hat: Tensor) -> tuple[Tensor, Tensor]:
    params = model.h_s(z_hat)
    if _is_mean_scale(model):  # h_s gives (scales, means), in CompressAI's order
        scales, means = params.chunk(2, dim=1)
        return means, scales
    return torch.zeros_like(params), params


def from_image(model: torch.nn.Module, x: Tensor) -> tuple[Tensor, DecodedLatents]:
    """(y, decoded latents) for images x in [0,1] whose sides are multiples of 64."""
    y = model.g_a(x)
    z = model.h_a(y if _is_mean_scale(model) else torch.abs(y))
    z_hat = model.entropy_bottleneck.quantize(
        z, "dequantize", model.entropy_bottleneck._get_medians()
    )
    means, scales = _params(model, z_hat)
    y_hat = torch.round(y - means) + means
    return y, DecodedLatents(y_hat, means, scales)


def _is_mean_scale(model: torch.nn.Module) -> bool:
    return type(model).__name__ != "ScaleHyperprior"


def from_strings(model: torch.nn.Module, strings, shape) -> DecodedLatents:
    """The decoded latents of a real bitstream (CompressAI's decompress, stopped before g_s)."""
    if not isinstance(strings, (list, tuple)) or len(strings) != 2:
        raise CodecError("a hyperprior payload has two string groups (y and z)")
    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
    means, scales = _params(model, z_hat)
    indexes = model.gaussian_conditional.build_indexes(scales)
    y_hat = model.gaussian_conditional.decompress(
        strings[0], indexes, z_hat.dtype, means if _is_mean_scale(model) else None
    )
    return DecodedLatents(y_hat, means, scales)


def synthesize(model: torch.nn.Module, y_hat: Tensor) -> Tensor:
    """The frozen synthesis transform g_s, clamped to [0,1] as CompressAI's decompress does."""
    return model.g_s(y_hat).clamp_(0, 1)
