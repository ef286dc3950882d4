"""Samplers against exact answers: the closed-form Gaussian PF-ODE and Theorem 3.1 on a mixture."""

from __future__ import annotations

import pytest
import torch

from percept.core.samplers import (
    SAMPLERS,
    per_image_generators,
    sample_consistency,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_euler_maruyama,
)
from percept.core.schedules import karras_sigmas, loglinear_sigmas, nfe
from percept.models import GaussianFlowMap, GaussianMixtureDenoiser


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two sample sets [N, D]."""
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ev, u = torch.linalg.eigh(ca)
    sa = u @ torch.diag(ev.clamp_min(0).sqrt()) @ u.T
    cross = torch.linalg.eigvalsh(sa @ cb @ sa).clamp_min(0).sqrt().sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + ca.trace() + cb.trace() - 2 * cross)


def swd(a: torch.Tensor, b: torch.Tensor, projections: int = 256) -> float:
    """Sliced 2-Wasserstein distance (equal sample counts; fixed projections)."""
    p = torch.randn(
        a.shape[1], projections, generator=torch.Generator().manual_seed(0), dtype=a.dtype
    )
    p = p / p.norm(dim=0)
    pa, pb = (a @ p).sort(0).values, (b @ p).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, generator=g, dtype=torch.float64) * 0.3
    a = torch.randn(3, 3, generator=g, dtype=torch.float64) * 0.4
    cov = a @ a.T + 0.05 * torch.eye(3, dtype=torch.float64)
    gmm = GaussianMixtureDenoiser(mu[None], cov[None])
    x = gmm.sample(400, g) + 0.5 * torch.randn(400, 3, generator=g, dtype=torch.float64)
    return gmm, GaussianFlowMap(mu, cov), x


def test_schedules_descend_to_zero():
    s = karras_sigmas(6, 0.4)
    assert s[0] == 0.4 and s[-1] == 0 and abs(float(s[-2]) - 0.002) < 1e-12
    assert bool((s[1:] < s[:-1]).all()) and nfe(s) == 6
    assert karras_sigmas(1, 0.3).tolist() == [0.3, 0.0]
    assert bool((loglinear_sigmas(4, 1e-3)[1:] < loglinear_sigmas(4, 1e-3)[:-1]).all())
    with pytest.raises(ValueError):
        sample_euler(lambda x, s: x, torch.zeros(1, 2), torch.tensor([1.0, 0.5]))


def test_dpmpp_2m_matches_closed_form_pf_ode(gaussian):
    gmm, flow, x = gaussian
    exact = flow.flow(x, 0.5, 0.0)
    rms = [
        float((sample_dpmpp_2m(gmm, x, karras_sigmas(n, 0.5)) - exact).pow(2).mean().sqrt())
        for n in (10, 20)
    ]
    assert rms[1] < 1e-3
    assert rms[0] / rms[1] > 3.5  # second order: error / 4 per doubling


def test_euler_is_first_order(gaussian):
    gmm, flow, x = gaussian
    exact = flow.flow(x, 0.5, 0.0)
    err = [
        float((sample_euler(gmm, x, karras_sigmas(n, 0.5)) - exact).pow(2).mean().sqrt())
        for n in (10, 20, 40)
    ]
    for coarse, fine in zip(err, err[1:]):
        assert 1.7 < coarse / fine < 2.3


def test_flow_map_is_a_one_step_consistency_model(gaussian):
    gmm, flow, x = gaussian
    out = sample_consistency(flow, x, karras_sigmas(1, 0.5))
    torch.testing.assert_close(out, flow.flow(x, 0.5, 0.0))
    # A two-step run re-noises and is still a sample near the data, not a copy of the first step.
    two = sample_consistency(
        flow, x, karras_sigmas(2, 0.5), generator=torch.Generator().manual_seed(0)
    )
    assert 0 < float((two - out).abs().mean()) < 0.1


@pytest.mark.parametrize("sampler", [sample_euler_maruyama, sample_euler_ancestral])
def test_last_step_of_either_sde_sampler_is_the_denoiser_output(sampler):
    gmm = GaussianMixtureDenoiser(torch.zeros(1, 2), torch.eye(2)[None] * 0.2)
    seen = []
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    out = sampler(
        gmm, x, torch.tensor([0.3, 0.1, 0.0]), generator=torch.Generator().manual_seed(1),
        callback=seen.append,
    )  # fmt: skip
    assert [c["i"] for c in seen] == [0, 1]
    torch.testing.assert_close(out, seen[-1]["denoised"])


def _noise_levels(sampler, sigmas: torch.Tensor) -> list[tuple[float, float]]:
    """(labelled sigma, actual rms of x - x0) at each step, with an oracle denoiser that returns x0."""
    x0 = torch.rand(20000, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x0 + float(sigmas[0]) * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    seen = []
    sampler(
        lambda x, s: x0, x, sigmas, generator=torch.Generator().manual_seed(2), callback=seen.append
    )
    return [(c["sigma"], float((c["x"] - x0).pow(2).mean().sqrt())) for c in seen]


def test_ancestral_steps_leave_the_noise_the_next_step_assumes():
    """The property that makes `medium-sde` work with 30 coarse steps: after each ancestral step x
    carries noise of exactly the next level, so a network told sigma' sees sigma'. Euler-Maruyama
    leaves more (variance sigma'^4/sigma^2 + sigma^2 - sigma'^2), up to 2x the level on a coarse
    schedule, which a learned denoiser then takes for texture."""
    sigmas = karras_sigmas(8, 1.0)
    for labelled, actual in _noise_levels(sample_euler_ancestral, sigmas):
        assert actual == pytest.approx(labelled, rel=0.02)
    surplus = [a / s for s, a in _noise_levels(sample_euler_maruyama, sigmas)]
    assert surplus[0] == pytest.approx(1.0, rel=0.02) and max(surplus) > 1.3


def test_per_image_noise_does_not_depend_on_batch():
    gmm = GaussianMixtureDenoiser(torch.zeros(1, 4), torch.eye(4)[None] * 0.1)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(5, 0.4)
    full = sample_euler_maruyama(gmm, x, sig, generator=torch.Generator().manual_seed(7))
    first = sample_euler_maruyama(gmm, x[:1], sig, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(full[:1], first)
    gens = per_image_generators(torch.Generator().manual_seed(7), 3)
    third = sample_euler_maruyama(gmm, x[2:], sig, generator=[gens[2]])
    torch.testing.assert_close(full[2:], third)
    again = sample_euler_maruyama(gmm, x, sig, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(full, again)
    assert not torch.allclose(
        full, sample_euler_maruyama(gmm, x, sig, generator=torch.Generator().manual_seed(8))
    )
    assert set(SAMPLERS) == {
        "consistency", "dpmpp_2m", "euler", "euler_ancestral", "euler_maruyama", "dps"
    }  # fmt: skip


@pytest.fixture(scope="module")
def mixture_experiment():
    """Source x0 from a 4-D, 3-component mixture; the decode: a blur/shrink, then a 0.25 quantizer."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 3000
    means = torch.randn(3, d, generator=g, dtype=torch.float64) * 0.4
    a = torch.randn(3, d, d, generator=g, dtype=torch.float64) * 0.15
    cov = a @ a.transpose(-1, -2) + 0.005 * torch.eye(d, dtype=torch.float64)
    gmm = GaussianMixtureDenoiser(means, cov, torch.tensor([0.5, 0.3, 0.2]))
    x0 = gmm.sample(n, g)
    blur = 0.7 * torch.eye(d, dtype=torch.float64) + 0.075
    x_hat = torch.round(x0 @ blur.T / 0.25) * 0.25
    return gmm, x0, x_hat, gmm.sample(n, g)


def _enhance(gmm, x_hat, sigma, sampler, steps, seed=1):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = x_hat + sigma * torch.randn_like(x_hat)  # eq. 9-10
        return sampler(gmm, x, karras_sigmas(steps, sigma))


@pytest.mark.parametrize("sde_sampler", [sample_euler_maruyama, sample_euler_ancestral])
def test_theorem_3_1_sde_closes_the_gap_and_ode_does_not_widen_it(mixture_experiment, sde_sampler):
    gmm, x0, x_hat, other = mixture_experiment
    floor, start = frechet(other, x0), frechet(x_hat, x0)
    assert start > 50 * floor  # the gap is far above the sampling noise
    sdes, odes = [], []
    for sigma in (0.1, 0.3, 0.8):
        sde = _enhance(gmm, x_hat, sigma, sde_sampler, 40)
        ode = _enhance(gmm, x_hat, sigma, sample_dpmpp_2m, 20)
        sdes.append((frechet(sde, x0), swd(sde, x0)))
        odes.append((frechet(ode, x0), swd(ode, x0)))
    assert all(fd < start and sw < swd(x_hat, x0) for fd, sw in sdes)
    assert all(fd < start for fd, _ in odes)  # eq. 12 for the ODE: never further away
    assert sdes[0][0] > sdes[1][0] > sdes[2][0]  # eq. 13: closer as sigma grows
    assert sdes[2][0] < 10 * floor + 0.005
    assert all(
        s[0] <= o[0] for s, o in zip(sdes, odes)
    )  # the SDE contracts, the ODE only preserves
