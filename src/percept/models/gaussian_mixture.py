"""An analytic denoiser: the exact posterior mean of a Gaussian mixture under Gaussian noise.

For data x0 ~ sum_k w_k N(mu_k, S_k) and x = x0 + sigma * eps (the Denoiser contract), the noisy
marginal is p_sigma(x) = sum_k w_k N(x; mu_k, S_k + sigma^2 I) and Tweedie's formula (paper eq. 8)
gives the posterior mean in closed form:

    D(x, sigma) = sum_k r_k(x) [mu_k + S_k (S_k + sigma^2 I)^{-1} (x - mu_k)],
    r_k(x) proportional to w_k N(x; mu_k, S_k + sigma^2 I).

Everything is computed in float64 from an eigendecomposition S_k = U_k diag(l_k) U_k^T, so that
(S_k + sigma^2 I)^{-1} and log det are exact for any sigma. This is the "perfect prior" of the
tests and the theory pages: with it, Theorem 3.1 can be checked without a trained network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GaussianMixtureDenoiser(nn.Module):
    """`GaussianMixtureDenoiser(means[K,D], covariances[K,D,D], weights[K])(x, sigma) -> E[x0 | x]`.

    Works on any input whose trailing dims flatten to D (e.g. [B,C,H,W] with C*H*W == D, or [B,D]).
    `sigma` is a float, a scalar tensor or one value per batch element; sigma == 0 returns x.
    """

    is_consistency_model = False

    def __init__(self, means: Tensor, covariances: Tensor, weights: Tensor | None = None) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        if means.ndim != 2 or covariances.shape != (*means.shape, means.shape[1]):
            raise ValueError(
                f"need means [K,D] and covariances [K,D,D], got {tuple(means.shape)} and {tuple(covariances.shape)}"
            )
        k = means.shape[0]
        weights = (
            torch.full((k,), 1.0 / k, dtype=torch.float64)
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float64)
        )
        if weights.shape != (k,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be K non-negative numbers with a positive sum")
        covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
        eigvals, eigvecs = torch.linalg.eigh(covariances)
        if (eigvals < -1e-10).any():
            raise ValueError("covariances must be positive semi-definite")
        self.register_buffer("means", means)
        self.register_buffer("covariances", covariances)
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("eigvals", eigvals.clamp_min(0.0))
        self.register_buffer("eigvecs", eigvecs)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def _flatten(self, x: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        if flat.shape[1] != self.dim:
            raise ValueError(
                f"input flattens to {flat.shape[1]} values per sample, the mixture has D={self.dim}"
            )
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)
        if s.numel() not in (1, x.shape[0]):
            raise ValueError(f"sigma has {s.numel()} values for a batch of {x.shape[0]}")
        return flat, s.expand(x.shape[0])

    def _components(self, flat: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component log responsibilities' numerators [B,K] and coordinates z = U^T (x - mu) [B,K,D]."""
        z = torch.einsum("kde,bkd->bke", self.eigvecs, flat[:, None, :] - self.means[None])
        var = self.eigvals[None] + s[:, None, None] ** 2  # [B,K,D]: eigenvalues of S_k + sigma^2 I
        log_n = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return self.weights.log()[None] + log_n, z

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) of the noisy marginal, one value per sample (needs sigma > 0 or full-rank S)."""
        flat, s = self._flatten(x, sigma)
        log_w, _ = self._components(flat, s)
        return torch.logsumexp(log_w, dim=1)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        flat, s = self._flatten(x, sigma)
        zero = s == 0
        s_safe = torch.where(zero, torch.ones_like(s), s)
        log_w, z = self._components(flat, s_safe)
        resp = torch.softmax(log_w, dim=1)  # r_k(x)
        shrink = self.eigvals[None] / (self.eigvals[None] + s_safe[:, None, None] ** 2)
        # mu_k + U diag(l / (l + sigma^2)) U^T (x - mu_k): the Gaussian posterior mean of component k
        post = self.means[None] + torch.einsum("kde,bke->bkd", self.eigvecs, shrink * z)
        out = (resp[..., None] * post).sum(1)
        out = torch.where(zero[:, None], flat, out)
        return out.reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples x0 of the mixture, [n, D] float64."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        scale = self.eigvecs[comp] * self.eigvals[comp].sqrt()[:, None, :]
        return self.means[comp] + torch.einsum("nde,ne->nd", scale, eps)


class GaussianFlowMap(nn.Module):
    """The exact probability-flow ODE solution map of one Gaussian N(mu, S), from sigma to 0.

    For Gaussian data the PF-ODE is linear and, in the eigenbasis of S, each coordinate is scaled by
    sqrt(l / (l + sigma^2)): x_0 = mu + S^{1/2} (S + sigma^2 I)^{-1/2} (x - mu). That is exactly what
    a perfect consistency model (paper eq. 15) computes, so this is the analytic stand-in for one in
    tests of the `fast` preset (`is_consistency_model = True`).
    """

    is_consistency_model = True

    def __init__(self, mean: Tensor, covariance: Tensor) -> None:
        super().__init__()
        self.gmm = GaussianMixtureDenoiser(
            torch.as_tensor(mean)[None], torch.as_tensor(covariance)[None]
        )

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.flow(x, sigma, 0.0)

    def flow(self, x: Tensor, sigma_from: Tensor | float, sigma_to: Tensor | float) -> Tensor:
        """x at sigma_from carried along the PF-ODE to sigma_to (closed form)."""
        g = self.gmm
        flat, s0 = g._flatten(x, sigma_from)
        _, s1 = g._flatten(x, sigma_to)
        z = (flat - g.means[0]) @ g.eigvecs[0]
        scale = (
            (g.eigvals[0][None] + s1[:, None] ** 2) / (g.eigvals[0][None] + s0[:, None] ** 2)
        ).sqrt()
        out = g.means[0] + (scale * z) @ g.eigvecs[0].T
        return out.reshape(x.shape).to(x.dtype)
