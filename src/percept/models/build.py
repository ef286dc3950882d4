"""A denoiser from its description: the one place that turns a model card or a run's config into
a network (a zoo file and a training run of the same model build the same module)."""

from __future__ import annotations

from torch import nn

from percept.errors import PerceptError
from percept.models.consistency import ConsistencyDenoiser
from percept.models.edm import EDMDenoiser
from percept.models.lowrank import add_low_rank
from percept.models.unet import UNet, UNetConfig

KINDS = ("prior", "cm")  # an EDM-preconditioned prior, a consistency model


def build_denoiser(
    kind: str,
    unet: dict,
    *,
    sigma_data: float = 0.5,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    lowrank_rank: int | None = None,
) -> nn.Module:
    """An untrained denoiser of `kind` on a UNet of config `unet`; `lowrank_rank` adds the low-rank
    parametrizations a patch-distilled consistency model trains (`percept.models.lowrank`)."""
    net = UNet(UNetConfig.from_dict(unet))
    if lowrank_rank is not None:
        add_low_rank(net, lowrank_rank)
    if kind == "prior":
        return EDMDenoiser(net, sigma_data)
    if kind == "cm":
        if sigma_min is None:
            raise PerceptError("a consistency model needs its sigma_min")
        return ConsistencyDenoiser(
            net, sigma_min=sigma_min, sigma_data=sigma_data, sigma_max=sigma_max
        )
    raise PerceptError(f"a {kind!r} model is not a denoiser (kinds: {', '.join(KINDS)})")
