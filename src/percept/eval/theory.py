"""Paper 1's Theorem 3.1 and the MSE-doubling bound, measured where they can be checked exactly.

The enhancer's argument (paper 1, section 3.1) has three steps. Let p be the source distribution
and q that of the decodes, and write p_s, q_s for both convolved with N(0, s^2 I):

1. adding noise brings them closer: KL(q_s || p_s) <= KL(q || p), and the gap shrinks as s grows
   (eq. 12's first inequality; the data-processing inequality for the Gaussian channel);
2. the probability-flow ODE from s to 0 is an invertible map that takes p_s to p, so the ODE output
   is exactly as far from p as q_s is from p_s: it *preserves* the divergence;
3. the reverse SDE *contracts* it further (eq. 13): its output is closer to p than the ODE's.

And the MSE-doubling bound (Blau and Michaeli 2018, paper eq. 3): a decoder of perfect realism
needs at most twice the MSE of the MSE-optimal decoder, with equality for the posterior sampler,
whose output y ~ p(x | z) has E|x - y|^2 = 2 E|x - E[x|z]|^2. The paper's rule picks the sigma at
which the enhancer's MSE is twice the decode's (`percept.enhancer.calibrate`).

With a trained prior none of this can be checked exactly. Here the source is a Gaussian mixture in
a few dimensions and the prior is its exact posterior mean (`GaussianMixtureDenoiser`): the "codec"
is a Gaussian channel z = x + c n and the decode its MSE-optimal estimate E[x | z], so the MMSE, the
posterior sampler and log p_s are all exact, and the divergence to the source is estimated with
the Kozachenko-Leonenko nearest-neighbour entropy (exact log p, estimated entropy of the samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from percept.core.samplers import sample_dpmpp_2m, sample_euler_ancestral
from percept.core.schedules import karras_sigmas
from percept.enhancer.calibrate import bisect_log_sigma
from percept.errors import PerceptError
from percept.models.gaussian_mixture import GaussianMixtureDenoiser

SOLVERS = ("ode", "sde")
# Offsets that keep the random streams of the problem, the posterior sampler, the enhancer's noise
# and the SDE's own noise apart for one seed (equal seeds must not give correlated draws).
POSTERIOR_STREAM, NOISE_STREAM, SDE_STREAM = 1_000_003, 2_000_003, 3_000_017


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) + stream)


@dataclass(frozen=True)
class MixtureProblem:
    """A source, its exact prior and an MSE-optimal decode of a Gaussian channel.

    source: x ~ p, [N, D]. observed: z = x + channel_sigma * n. decoded: E[x | z], the MSE-optimal
    decode (computed by the prior itself: Tweedie's posterior mean at noise level channel_sigma).
    reference: N fresh samples of p, the sampling floor of every distance.
    """

    prior: GaussianMixtureDenoiser
    source: Tensor
    observed: Tensor
    decoded: Tensor
    reference: Tensor
    channel_sigma: float

    @property
    def mmse(self) -> float:
        """The decode's mean squared error per coordinate (the MMSE, up to sampling)."""
        return mean_squared_error(self.decoded, self.source)


def mixture_problem(
    *,
    dim: int = 2,
    components: int = 3,
    n: int = 2000,
    channel_sigma: float = 0.5,
    spread: float = 1.0,
    width: float = 0.25,
    seed: int = 0,
) -> MixtureProblem:
    """A `components`-mode mixture in `dim` dimensions (means ~ N(0, spread^2), covariances of
    scale `width`), n source samples, their channel observations and MSE-optimal decodes."""
    if channel_sigma <= 0:
        raise PerceptError(f"channel_sigma must be > 0, got {channel_sigma}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(components, dim, generator=g, dtype=torch.float64) * spread
    a = torch.randn(components, dim, dim, generator=g, dtype=torch.float64) * width
    cov = a @ a.transpose(-1, -2) + 0.1 * width**2 * torch.eye(dim, dtype=torch.float64)
    weights = torch.rand(components, generator=g, dtype=torch.float64) + 0.5
    prior = GaussianMixtureDenoiser(means, cov, weights)
    source = prior.sample(n, g)
    observed = source + channel_sigma * torch.randn(source.shape, generator=g, dtype=torch.float64)
    decoded = prior(observed, channel_sigma)
    return MixtureProblem(
        prior, source, observed, decoded, prior.sample(n, g), float(channel_sigma)
    )


def mean_squared_error(a: Tensor, b: Tensor) -> float:
    """Mean over samples and coordinates of (a - b)^2."""
    return float(((a.double() - b.double()) ** 2).mean())


def _log_gauss_eig(z: Tensor, var: Tensor) -> Tensor:
    """log N(z; 0, U diag(var) U^T) from eigen-coordinates z [B,K,D] and variances [.., K, D]."""
    return -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + z.shape[-1] * math.log(2 * math.pi))


def posterior_samples(problem: MixtureProblem, *, seed: int = 0) -> Tensor:
    """One exact sample of p(x | z) per observation: the perfect-realism decoder of the bound.

    For a Gaussian mixture the posterior is a mixture of Gaussians: component k with probability
    proportional to w_k N(z; mu_k, S_k + c^2 I), mean mu_k + S_k (S_k + c^2 I)^-1 (z - mu_k) and
    covariance S_k - S_k (S_k + c^2 I)^-1 S_k (all diagonal in S_k's eigenbasis)."""
    prior, z, c2 = problem.prior, problem.observed, problem.channel_sigma**2
    g = _generator(seed, POSTERIOR_STREAM)
    u, lam = prior.eigvecs, prior.eigvals  # [K,D,D], [K,D]
    coords = torch.einsum("kde,bkd->bke", u, z[:, None, :] - prior.means[None])  # [B,K,D]
    log_r = prior.weights.log()[None] + _log_gauss_eig(coords, lam[None] + c2)
    comp = torch.multinomial(torch.softmax(log_r, 1), 1, generator=g)[:, 0]
    lam_k, u_k, c_k = lam[comp], u[comp], coords[torch.arange(len(comp)), comp]  # [B,D],[B,D,D]
    mean = c_k * lam_k / (lam_k + c2)
    std = (lam_k * c2 / (lam_k + c2)).sqrt()
    eps = torch.randn(mean.shape, generator=g, dtype=torch.float64)
    return prior.means[comp] + torch.einsum("bde,be->bd", u_k, mean + std * eps)


def noised(decoded: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """decoded + sigma * eps (eq. 9-10), the noise `enhance_samples` starts from for this seed."""
    eps = torch.randn(decoded.shape, generator=_generator(seed, NOISE_STREAM), dtype=torch.float64)
    return decoded + sigma * eps.to(decoded.dtype)


def enhance_samples(
    prior, decoded: Tensor, sigma: float, solver: str = "sde", *, steps: int | None = None,
    seed: int = 0,
) -> Tensor:  # fmt: skip
    """Paper 1's enhancer on vectors: decoded + sigma * eps (eq. 9-10), then the PF-ODE
    (DPM-Solver++(2M), 20 Karras steps by default) or the reverse SDE (Euler ancestral, the
    medium-sde preset's sampler, 100 steps by default) from sigma to 0 with the exact prior
    (eq. 11)."""
    if solver not in SOLVERS:
        raise PerceptError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if sigma == 0:
        return decoded.clone()
    x = noised(decoded, sigma, seed)
    if solver == "ode":
        return sample_dpmpp_2m(prior, x, karras_sigmas(steps or 20, sigma).double())
    with torch.random.fork_rng():
        torch.manual_seed(seed + SDE_STREAM)  # the SDE's own noise, from torch's global generator
        return sample_euler_ancestral(prior, x, karras_sigmas(steps or 100, sigma).double())


def knn_entropy(samples: Tensor, k: int = 3) -> float:
    """Differential entropy (nats) of a sample set [N, D] by the Kozachenko-Leonenko estimator:
    psi(N) - psi(k) + log V_D + D mean(log r_k), r_k the distance to the k-th nearest neighbour."""
    x = samples.double()
    n, d = x.shape
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    r = dist.kthvalue(k, dim=1).values.clamp_min(1e-300)
    log_volume = d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)
    digamma = torch.special.digamma(torch.tensor([float(n), float(k)], dtype=torch.float64))
    return float(digamma[0] - digamma[1] + log_volume + d * r.log().mean())


def kl_to_prior(
    samples: Tensor, prior: GaussianMixtureDenoiser, sigma: float = 0.0, k: int = 3
) -> float:
    """KL(q || p_sigma) for samples of q: -H(q) (nearest-neighbour estimate) - E_q log p_sigma
    (exact). Near 0 for samples of p_sigma itself (the estimator's floor), never exactly."""
    return -knn_entropy(samples, k) - float(prior.log_prob(samples, sigma).mean())


def gaussian_kl(var_q: float, var_p: float, dim: int) -> float:
    """KL(N(0, var_q I) || N(0, var_p I)) in `dim` dimensions, exactly."""
    ratio = var_q / var_p
    return 0.5 * dim * (ratio - 1 - math.log(ratio))


def _row(problem: MixtureProblem, output: str, sigma: float, y: Tensor, noise: float = 0.0) -> dict:
    """KL to p (or to p_noise for a noised set), MSE to the source and its ratio to the decode's."""
    mse = mean_squared_error(y, problem.source)
    return {
        "output": output,
        "sigma": float(sigma),
        "kl": kl_to_prior(y, problem.prior, noise),
        "mse": mse,
        "mse_ratio": mse / problem.mmse,
    }


def theorem_sweep(
    problem: MixtureProblem,
    sigmas: Sequence[float],
    *,
    ode_steps: int = 20,
    sde_steps: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """Theorem 3.1 measured, one row per (output, sigma).

    output: "decode" (sigma 0), "noised" (the decode plus noise, compared with the source plus
    noise: KL(q_s || p_s), the theorem's first step), "ode" and "sde" (the enhancer's output,
    compared with the source), "posterior sample" (the perfect-realism decoder; sigma NaN) and
    "source" (fresh samples of p: the estimators' floor; sigma NaN). Columns: kl (nats; the
    "source" row is the estimator's floor), mse (per coordinate, to the source) and mse_ratio (to
    the decode's: the paper's x axis)."""
    rows = [_row(problem, "decode", 0.0, problem.decoded)]
    for sigma in sorted(float(s) for s in sigmas if s > 0):
        rows.append(
            _row(problem, "noised", sigma, noised(problem.decoded, sigma, seed), noise=sigma)
        )
        for solver, steps in (("ode", ode_steps), ("sde", sde_steps)):
            y = enhance_samples(
                problem.prior, problem.decoded, sigma, solver, steps=steps, seed=seed
            )
            rows.append(_row(problem, solver, sigma, y))
    rows.append(_row(problem, "posterior sample", math.nan, posterior_samples(problem, seed=seed)))
    rows.append(_row(problem, "source", math.nan, problem.reference))
    return pd.DataFrame(rows)


def mse_doubling_sigma(
    problem: MixtureProblem,
    solver: str = "sde",
    *,
    target: float = 2.0,
    steps: int | None = None,
    seed: int = 0,
    tol: float = 0.01,
) -> tuple[float, float]:
    """(sigma, MSE ratio reached): the paper's rule on this problem, the sigma at which the
    enhancer's MSE is `target` times the decode's (log-bisection, as `percept calibrate` does)."""

    def ratio_at(sigma: float) -> float:
        y = enhance_samples(problem.prior, problem.decoded, sigma, solver, steps=steps, seed=seed)
        return mean_squared_error(y, problem.source) / problem.mmse

    sigma, history = bisect_log_sigma(ratio_at, target, tol=tol, hi_max=1e3)
    return sigma, dict(history)[sigma]


def contraction(table: pd.DataFrame) -> pd.DataFrame:
    """Per sigma of a `theorem_sweep` table: the KL of the decode, of the noised pair, of the ODE
    and SDE outputs, and the ratios the theorem bounds (noised / decode <= 1, ode / noised = 1 for
    an exact solver, sde / ode <= 1)."""
    wide = table[table["output"].isin(["noised", "ode", "sde"])].pivot(
        index="sigma", columns="output", values="kl"
    )
    wide.insert(0, "decode", float(table.loc[table["output"] == "decode", "kl"].iloc[0]))
    wide["noised / decode"] = wide["noised"] / wide["decode"]
    wide["ode / noised"] = wide["ode"] / wide["noised"]
    wide["sde / ode"] = wide["sde"] / wide["ode"]
    wide.columns.name = None
    return wide.replace([np.inf, -np.inf], np.nan)
