"""Denoisers D(x, sigma) -> x0 estimate (EDM convention: images in [-1, 1], x = x0 + sigma * eps).

The project's own networks (a multi-scale UNet with EDM or consistency preconditioning, low-rank
patches), an analytic Gaussian mixture with its exact posterior mean (for tests and theory), and
adapters that make diffusers models the same kind of callable. diffusers itself is imported only when
an adapter is built.
"""

from percept.models.consistency import ConsistencyDenoiser, consistency_scalings
from percept.models.diffusers import DDPMDenoiser, DiffusersConsistencyDenoiser, from_pretrained
from percept.models.edm import EDMDenoiser, edm_scalings
from percept.models.gaussian_mixture import GaussianFlowMap, GaussianMixtureDenoiser
from percept.models.unet import UNet, UNetConfig, count_parameters

__all__ = [
    "ConsistencyDenoiser",
    "DDPMDenoiser",
    "DiffusersConsistencyDenoiser",
    "EDMDenoiser",
    "GaussianFlowMap",
    "GaussianMixtureDenoiser",
    "UNet",
    "UNetConfig",
    "consistency_scalings",
    "count_parameters",
    "edm_scalings",
    "from_pretrained",
]
