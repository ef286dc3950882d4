"""The project's own networks: a multi-scale UNet and the preconditionings that make it a Denoiser."""

from percept.models.consistency import ConsistencyDenoiser, consistency_scalings
from percept.models.edm import EDMDenoiser, edm_scalings
from percept.models.unet import UNet, UNetConfig, count_parameters

__all__ = [
    "ConsistencyDenoiser",
    "EDMDenoiser",
    "UNet",
    "UNetConfig",
    "count_parameters",
    "consistency_scalings",
    "edm_scalings",
]
