"""percept.eval.theory against exact answers: entropy of a Gaussian, the posterior sampler's doubled
MSE, the ODE preserving and the SDE contracting the divergence (Theorem 3.1)."""

from __future__ import annotations

import math

import pytest
import torch

from percept.errors import PerceptError
from percept.eval import theory
from percept.models import GaussianMixtureDenoiser


def test_knn_entropy_and_kl_of_a_gaussian_are_exact():
    g = GaussianMixtureDenoiser(torch.zeros(1, 2), torch.eye(2)[None] * 0.5)
    x = g.sample(4000, torch.Generator().manual_seed(0))
    exact = 0.5 * 2 * math.log(2 * math.pi * math.e * 0.5)  # log det(2 pi e S) / 2
    assert theory.knn_entropy(x) == pytest.approx(exact, abs=0.05)
    assert abs(theory.kl_to_prior(x, g)) < 0.03
    assert theory.gaussian_kl(1.0, 1.0, 3) == 0.0
    assert theory.gaussian_kl(2.0, 1.0, 2) == pytest.approx(1 - math.log(2))


@pytest.fixture(scope="module")
def gaussian_problem():
    """One isotropic Gaussian N(0, I) behind a channel of sigma 1: the decode is N(0, I / 2)."""
    g = torch.Generator().manual_seed(0)
    prior = GaussianMixtureDenoiser(torch.zeros(1, 2), torch.eye(2)[None])
    source = prior.sample(6000, g)
    observed = source + torch.randn(source.shape, generator=g, dtype=torch.float64)
    return theory.MixtureProblem(
        prior, source, observed, prior(observed, 1.0), prior.sample(6000, g), 1.0
    )


def test_the_decode_is_the_mmse_and_the_posterior_sampler_doubles_it(gaussian_problem):
    p = gaussian_problem
    torch.testing.assert_close(p.decoded, p.observed / 2)  # E[x | z] = z / (1 + c^2)
    assert p.mmse == pytest.approx(0.5, rel=0.04)  # Var(x | z) = c^2 / (1 + c^2)
    y = theory.posterior_samples(p)
    assert theory.mean_squared_error(y, p.source) / p.mmse == pytest.approx(2.0, rel=0.04)
    torch.testing.assert_close(torch.cov(y.T), torch.eye(2, dtype=torch.float64), atol=0.05, rtol=0)


def test_the_ode_preserves_the_noised_divergence_exactly_for_a_gaussian(gaussian_problem):
    p = gaussian_problem
    decode = theory.kl_to_prior(p.decoded, p.prior)
    assert decode == pytest.approx(theory.gaussian_kl(0.5, 1.0, 2), abs=0.03)
    for sigma in (0.3, 1.0):
        noised = theory.gaussian_kl(0.5 + sigma**2, 1 + sigma**2, 2)  # KL(q_s || p_s), exact
        assert noised < decode
        y = theory.enhance_samples(p.prior, p.decoded, sigma, "ode")
        assert theory.kl_to_prior(y, p.prior) == pytest.approx(noised, abs=0.03)


@pytest.fixture(scope="module")
def mixture():
    problem = theory.mixture_problem(n=1500, seed=0)
    return problem, theory.theorem_sweep(problem, [0.1, 0.3], sde_steps=60)


def test_theorem_3_1_on_a_mixture(mixture):
    problem, table = mixture
    assert problem.prior.means.shape == (3, 2)
    kl = table.set_index(["output", "sigma"])["kl"]
    floor = table.loc[table["output"] == "source", "kl"].iloc[0]
    decode = kl[("decode", 0.0)]
    assert decode > 20 * abs(floor)  # the decode is far from the source
    assert kl[("noised", 0.1)] < decode and kl[("noised", 0.3)] < kl[("noised", 0.1)]
    for s in (0.1, 0.3):
        assert kl[("ode", s)] == pytest.approx(kl[("noised", s)], rel=0.15)  # preserved
        assert kl[("sde", s)] < 0.8 * kl[("ode", s)]  # contracted
    post = table[table["output"] == "posterior sample"].iloc[0]
    assert post["mse_ratio"] == pytest.approx(2.0, rel=0.12)
    assert abs(post["kl"] - floor) < 0.05 * decode  # perfect realism: at the floor
    c = theory.contraction(table)
    assert list(c.index) == [0.1, 0.3] and (c["sde / ode"] < 1).all()
    assert (c["noised / decode"] < 1).all()


def test_mse_doubling_sigma_hits_the_target(mixture):
    problem, table = mixture
    sigma, ratio = theory.mse_doubling_sigma(problem, "ode", tol=0.02)
    assert ratio == pytest.approx(2.0, rel=0.02)
    ode = table[table["output"] == "ode"].set_index("sigma")["mse_ratio"]
    assert ode[0.1] < 2 and 0.1 < sigma  # the MSE grows with sigma


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(PerceptError, match="solver"):
        theory.enhance_samples(None, torch.zeros(2, 2), 0.1, "heun")
    with pytest.raises(PerceptError, match="channel_sigma"):
        theory.mixture_problem(channel_sigma=0)
