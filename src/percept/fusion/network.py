"""Stage (c) of paper 2: a small conditional diffusion network in the codec's latent space.

It models the residual r = Q(g'_a(x)) - y_hat between the auxiliary encoder's latents and the
decoded ones, given what the decoder knows (y_hat and the hyperprior's means and log-scales). The
residual is divided by a per-channel scale measured on training data (`residual_std`, a buffer), so
that the EDM preconditioning with sigma_data = 1 fits every channel; the network is a stack of
residual 3x3 blocks at the latent resolution (H/16), each modulated by the noise level (FiLM).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from percept.models.edm import as_batch_sigma, edm_scalings

SIGMA_DATA = 1.0  # the residual is normalised to unit scale per channel


class FiLMBlock(nn.Module):
    """conv-GroupNorm-SiLU-conv with a noise-level scale and shift, plus the skip."""

    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, width)
        self.film = nn.Linear(emb, 2 * width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        out = self.conv1(nn.functional.silu(self.norm1(h)))
        out = nn.functional.silu(self.norm2(out) * (1 + scale) + shift)
        return h + self.conv2(out)


class LatentFusionNet(nn.Module):
    """F(c_in r, c_noise | condition) for latents of `channels` channels (condition: 3x channels)."""

    def __init__(self, channels: int, width: int = 128, blocks: int = 6, emb: int = 128):
        super().__init__()
        self.config = {"channels": channels, "width": width, "blocks": blocks, "emb": emb}
        self.freqs = nn.Parameter(torch.randn(emb // 2) * 4, requires_grad=False)
        self.embed = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(4 * channels, width, 1)
        self.blocks = nn.ModuleList(FiLMBlock(width, emb) for _ in range(blocks))
        self.out_norm = nn.GroupNorm(8, width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, condition: Tensor) -> Tensor:
        angles = 2 * math.pi * c_noise[:, None] * self.freqs[None]
        emb = self.embed(torch.cat([angles.cos(), angles.sin()], dim=1))
        h = self.inp(torch.cat([x, condition], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h)))


class LatentDenoiser(nn.Module):
    """D(r, sigma | condition): the EDM-preconditioned estimate of the normalised residual.

    Every model in percept becomes D(x, sigma); this one also needs the decoder's latents, which
    `bind` fixes for one image batch, so that the project's samplers run it unchanged.
    """

    def __init__(self, net: LatentFusionNet):
        super().__init__()
        self.net = net
        self.register_buffer("residual_std", torch.ones(net.config["channels"]))
        self.register_buffer("condition_std", torch.ones(3 * net.config["channels"]))

    def normalise_condition(self, condition: Tensor) -> Tensor:
        return condition / self.condition_std[None, :, None, None]

    def forward(self, x: Tensor, sigma: Tensor | float, condition: Tensor) -> Tensor:
        s = as_batch_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_scalings(s, SIGMA_DATA)
        f = self.net(c_in * x, c_noise.reshape(-1), self.normalise_condition(condition))
        return c_skip * x + c_out * f

    def bind(self, condition: Tensor):
        """D(x, sigma) for one batch of conditions: the Denoiser contract the samplers expect."""
        return lambda x, sigma: self(x, sigma, condition)

    def to_latent(self, r: Tensor) -> Tensor:
        """Normalised residual -> latent units."""
        return r * self.residual_std[None, :, None, None]

    def from_latent(self, r: Tensor) -> Tensor:
        return r / self.residual_std[None, :, None, None]


class EDMLoss:
    """EDM's denoising loss (Karras et al. 2022, eq. 2 with Table 1's weighting and ln sigma ~ N)."""

    def __init__(self, p_mean: float = -0.4, p_std: float = 1.2):
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(
        self, denoiser: LatentDenoiser, r: Tensor, condition: Tensor, generator: torch.Generator
    ) -> Tensor:
        n = r.shape[0]
        sigma = (torch.randn(n, generator=generator) * self.p_std + self.p_mean).exp().to(r)
        noise = torch.randn(r.shape, generator=generator).to(r)
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2
        denoised = denoiser(r + s * noise, sigma, condition)
        return (weight * (denoised - r) ** 2).mean()
