"""Consistency-model preconditioning (Song et al. 2023, appendix C, eq. 9 with EDM's c_in).

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; ln(sigma)/4)
    c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2),   c_out = sd (sigma - sigma_min) / sqrt(sd^2 + sigma^2)

c_skip(sigma_min) = 1 and c_out(sigma_min) = 0, so f(x, sigma_min) = x exactly: the boundary
condition that makes f the solution map of the probability-flow ODE to sigma_min. One call maps a
noisy image at any sigma to an estimate of x0, so it satisfies the Denoiser contract too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from percept.models.edm import SIGMA_DATA, SIGMA_FLOOR, as_batch_sigma

SIGMA_MIN = 0.002  # EDM's and the consistency-models paper's smallest noise level


def consistency_scalings(
    sigma: Tensor, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) of the consistency parameterisation."""
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = sigma_data * (sigma - sigma_min) / (sigma_data**2 + sigma**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    c_noise = sigma.clamp_min(SIGMA_FLOOR).log() / 4
    return c_skip, c_out, c_in, c_noise


class ConsistencyDenoiser(nn.Module):
    """`ConsistencyDenoiser(net)(x, sigma) -> f(x, sigma)`: one step to x0 from any sigma >= sigma_min.

    Noise levels below sigma_min are treated as sigma_min (f is then the identity), which keeps a
    schedule that ends in 0 well defined. `sigma_max` (when known: the top of the noise levels it
    was distilled on) lets the enhancer warn when asked for more, where one step extrapolates.
    """

    is_consistency_model = True  # the denoiser contract, `percept.core.denoiser`

    def __init__(
        self,
        net: nn.Module,
        sigma_min: float = SIGMA_MIN,
        sigma_data: float = SIGMA_DATA,
        sigma_max: float | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.sigma_min = sigma_min
        self.sigma_data = sigma_data
        self.sigma_max = sigma_max

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        s = as_batch_sigma(sigma, x).clamp_min(self.sigma_min)
        c_skip, c_out, c_in, c_noise = consistency_scalings(s, self.sigma_min, self.sigma_data)
        f = self.net((c_in * x).to(x.dtype), c_noise.reshape(-1))
        return c_skip * x + c_out * f.to(torch.float32)

    @property
    def config(self):
        return self.net.config
