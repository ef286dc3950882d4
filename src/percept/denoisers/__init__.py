"""Denoisers D(x, sigma) -> x0 estimate (EDM convention, images in [-1, 1], x = x0 + sigma * eps).

An analytic Gaussian mixture (exact posterior mean, for tests and theory) and adapters for
diffusers models. The project's own networks live in `percept.models`. The diffusers adapters are
imported lazily, so `import percept.denoisers` does not import diffusers.
"""

from __future__ import annotations

from percept.denoisers.gaussian_mixture import GaussianFlowMap, GaussianMixtureDenoiser

__all__ = [
    "DDPMDenoiser",
    "DiffusersConsistencyDenoiser",
    "GaussianFlowMap",
    "GaussianMixtureDenoiser",
    "from_pretrained",
]


def __getattr__(name: str):
    if name in ("DDPMDenoiser", "DiffusersConsistencyDenoiser", "from_pretrained"):
        from percept.denoisers import diffusers_adapters

        return getattr(diffusers_adapters, name)
    raise AttributeError(f"module 'percept.denoisers' has no attribute {name!r}")
