"""EDM preconditioning: the project's own prior as a `Denoiser` (Karras et al. 2022, Table 1).

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
    c_skip = sd^2 / (sigma^2 + sd^2),   c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2),  c_noise = ln(sigma) / 4,   sd = sigma_data = 0.5

Images are in [-1, 1] and x = x0 + sigma * eps (variance-exploding), as in the Denoiser contract.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

SIGMA_DATA = 0.5
# ln(sigma) is undefined at 0; below this the network's contribution (c_out ~ sigma) is negligible.
SIGMA_FLOOR = 1e-8


def edm_scalings(
    sigma: Tensor, sigma_data: float = SIGMA_DATA
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for a tensor of noise levels."""
    s2 = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / s2
    c_out = sigma * sigma_data / s2.sqrt()
    c_in = 1 / s2.sqrt()
    c_noise = sigma.clamp_min(SIGMA_FLOOR).log() / 4
    return c_skip, c_out, c_in, c_noise


def as_batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma of shape [] or [B] (or a float) -> float32 [B,1,1,1] on x's device."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    if sigma.numel() not in (1, x.shape[0]):
        raise ValueError(f"sigma has {sigma.numel()} values for a batch of {x.shape[0]}")
    return sigma.expand(x.shape[0]).reshape(-1, 1, 1, 1)


class EDMDenoiser(nn.Module):
    """`EDMDenoiser(net)(x, sigma) -> D(x)`, the estimate of x0 (the project's Denoiser)."""

    is_consistency_model = False  # the denoiser contract, `percept.core.denoiser`

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = as_batch_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_scalings(s, self.sigma_data)
        f = self.net((c_in * x).to(x.dtype), c_noise.reshape(-1))
        return c_skip * x + c_out * f.to(torch.float32)

    @property
    def config(self):
        return self.net.config
