"""Low-rank weight deltas (LoRA, Hu et al. 2021) for distilling a student that ships as a patch.

A consistency model distilled from the prior starts from the prior's weights (Song et al. 2023 do
the same). Training only a low-rank change of each convolution and linear layer, plus the small
vectors (biases, normalisation scales), keeps most of the prior's knowledge and lets the student
ship as a few megabytes that are added to the prior's weights at load time (the idea of
LCM-LoRA, Luo et al. 2023), instead of a second full copy of the UNet.

    W_student = W_prior + B @ A,   A: (rank, fan_in), B: (fan_out, rank), B = 0 at the start.

A layer whose full weight is smaller than its two factors is trained (and stored) whole.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from percept.errors import PerceptError

A_SUFFIX, B_SUFFIX = ".lowrank_A", ".lowrank_B"


class LowRankDelta(nn.Module):
    """Parametrization: weight -> weight + (B @ A) reshaped to the weight's shape."""

    def __init__(self, weight: Tensor, rank: int) -> None:
        super().__init__()
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        self.A = nn.Parameter(torch.randn(rank, fan_in) / math.sqrt(fan_in))
        self.B = nn.Parameter(torch.zeros(fan_out, rank))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + (self.B @ self.A).view_as(weight).to(weight.dtype)


def _weighted_layers(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            yield name, module


def _factored(weight: Tensor, rank: int) -> bool:
    return rank * (weight.shape[0] + weight[0].numel()) < weight.numel()


def add_low_rank(model: nn.Module, rank: int) -> nn.Module:
    """Freeze `model` and make it trainable through low-rank deltas (in place; returns it).

    Trainable afterwards: the factors of every conv/linear layer that a rank-`rank` factorisation
    makes smaller, the whole weight of every other such layer, and every 1-D parameter (biases,
    GroupNorm scales and shifts)."""
    if rank < 1:
        raise PerceptError(f"low-rank delta: rank must be >= 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(p.ndim == 1)
    for _, module in list(_weighted_layers(model)):
        if _factored(module.weight, rank):
            parametrize.register_parametrization(
                module, "weight", LowRankDelta(module.weight, rank)
            )
            module.parametrizations.weight.original.requires_grad_(False)
        else:
            module.weight.requires_grad_(True)
    return model


def delta_state(model: nn.Module) -> dict[str, Tensor]:
    """What a low-rank student adds to its base: factors, whole small weights, and 1-D parameters,
    keyed by the base UNet's parameter names (`<layer>.weight.lowrank_A` / `_B` for factors)."""
    out: dict[str, Tensor] = {}
    for name, module in _weighted_layers(model):
        prefix = f"{name}.weight"
        if parametrize.is_parametrized(module, "weight"):
            delta = module.parametrizations.weight[0]
            out[prefix + A_SUFFIX], out[prefix + B_SUFFIX] = delta.A.detach(), delta.B.detach()
        else:
            out[prefix] = module.weight.detach()
    for name, p in model.named_parameters():
        if p.ndim == 1:
            out[name] = p.detach()
    return out


def load_delta(model: nn.Module, delta: dict[str, Tensor]) -> nn.Module:
    """Set a low-rank student's trainable parts (from `add_low_rank`) to a stored patch (in place).

    The inverse of `delta_state`: factors, whole small weights and 1-D parameters. The base weights
    under the factors are left as they are, so a patch distilled on one prior can seed the
    distillation of the next (a warm start). Every trainable part must be in the patch, and nothing
    else may be."""
    want = delta_state(model)
    missing, extra = sorted(set(want) - set(delta)), sorted(set(delta) - set(want))
    if missing or extra:
        raise PerceptError(
            "the low-rank patch does not fit this student (another rank or architecture?): "
            f"missing {missing[:3]}, unexpected {extra[:3]}"
        )
    with torch.no_grad():
        for key, current in want.items():
            if delta[key].shape != current.shape:
                raise PerceptError(f"low-rank patch {key!r} has the wrong shape for this student")
            current.copy_(delta[key].to(current.dtype))  # `current` shares storage with the model
    return model


def merge_delta(base: dict[str, Tensor], delta: dict[str, Tensor]) -> dict[str, Tensor]:
    """The student's full state dict: `base` with `delta` (from `delta_state`) applied, in float32."""
    merged = {k: v.float().clone() for k, v in base.items()}
    for key, value in delta.items():
        if key.endswith(B_SUFFIX):
            continue
        if key.endswith(A_SUFFIX):
            target = key.removesuffix(A_SUFFIX)
            if target not in merged or target + B_SUFFIX not in delta:
                raise PerceptError(f"low-rank delta {key!r} does not match the base model")
            w, b = merged[target], delta[target + B_SUFFIX]
            if b.shape[0] != w.shape[0] or value.shape[1] != w[0].numel():
                raise PerceptError(f"low-rank delta {key!r} has the wrong shape for the base model")
            merged[target] = w + (b.float() @ value.float()).view_as(w)
        elif key in merged:
            if merged[key].shape != value.shape:
                raise PerceptError(f"low-rank delta {key!r} has the wrong shape for the base model")
            merged[key] = value.float().clone()
        else:
            raise PerceptError(f"low-rank delta {key!r} does not match the base model")
    return merged


def merge_in_place(model: nn.Module) -> nn.Module:
    """Fold every low-rank parametrization into a plain weight (inference speed equals the base's)."""
    for _, module in _weighted_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
