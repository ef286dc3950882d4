"""Denoisers: the exact mixture posterior mean, tiling, and the diffusers adapters on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from percept.core.tiling import TiledDenoiser, pad_to_multiple
from percept.errors import WeightsUnavailable
from percept.models import GaussianFlowMap, GaussianMixtureDenoiser


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * 0.3
    cov = a @ a.transpose(-1, -2) + 0.01 * torch.eye(4, dtype=torch.float64)
    return GaussianMixtureDenoiser(means, cov, torch.tensor([0.2, 0.3, 0.5]))


def test_mixture_is_tweedie_of_its_own_density(mixture):
    # Tweedie (paper eq. 8): E[x0 | x] = x + sigma^2 grad log p_sigma(x), an independent route.
    x = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.1, 0.3, 0.5, 1.0, 3.0], dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(xg, sigma).sum(), xg)
    torch.testing.assert_close(mixture(x, sigma), x + sigma.reshape(-1, 1, 1, 1) ** 2 * grad)


def test_mixture_limits_and_shapes(mixture):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(mixture(x, 0.0), x)
    far = mixture(x, 1e4).double()  # huge noise: the prior mean
    prior_mean = (mixture.weights[:, None] * mixture.means).sum(0)
    torch.testing.assert_close(far, prior_mean.expand(3, 4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        mixture(torch.zeros(2, 5), 0.1)
    samples = mixture.sample(20000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(samples.mean(0), prior_mean, atol=0.02, rtol=0)


def test_single_gaussian_posterior_mean_is_linear():
    cov = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)
    mu = torch.tensor([0.2, -0.1], dtype=torch.float64)
    d = GaussianMixtureDenoiser(mu[None], cov[None])
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = mu + (x - mu) @ torch.linalg.solve(
        cov + 0.25 * torch.eye(2, dtype=torch.float64), cov
    )
    torch.testing.assert_close(d(x, 0.5), expected)
    flow = GaussianFlowMap(mu, cov)
    torch.testing.assert_close(flow.flow(flow.flow(x, 0.5, 0.2), 0.2, 0.0), flow(x, 0.5))


def test_tiling_is_exact_for_pixelwise_denoisers_and_handles_any_size():
    def shrink(x, sigma):  # acts on each pixel alone, so tiles must reproduce it exactly
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return x / (1 + s**2)

    x = torch.randn(2, 3, 13, 21, generator=torch.Generator().manual_seed(0))
    tiled = TiledDenoiser(shrink, tile=8, overlap=3, max_batch=5)
    torch.testing.assert_close(
        tiled(x, torch.tensor([0.5, 1.0])), shrink(x, torch.tensor([0.5, 1.0]))
    )
    torch.testing.assert_close(tiled(x[..., :5, :6], 0.3), shrink(x[..., :5, :6], 0.3))
    gmm = GaussianMixtureDenoiser(torch.zeros(1, 3 * 4 * 4), torch.eye(48)[None] * 0.1)
    assert TiledDenoiser(gmm, 4, 1)(x, 0.2).shape == x.shape
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (16, 24) and size == (13, 21)


def _tiny_unet(seed: int):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(4, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    with torch.no_grad():  # move the output away from zero-ish init so the checks have teeth
        unet.conv_out.weight.normal_(0, 0.3)
    return unet.eval()


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory):
    from diffusers import DDPMScheduler

    folder = tmp_path_factory.mktemp("ddpm")
    _tiny_unet(0).save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(folder / "scheduler")
    return folder


def test_ddpm_adapter_matches_scheduler_x0(ddpm_dir):
    from diffusers import DDPMScheduler, UNet2DModel

    from percept.models import DDPMDenoiser, from_pretrained

    den = from_pretrained(ddpm_dir)
    assert isinstance(den, DDPMDenoiser) and not den.is_consistency_model
    unet = UNet2DModel.from_pretrained(ddpm_dir / "unet").eval()
    sched = DDPMScheduler.from_pretrained(ddpm_dir / "scheduler")
    x_vp = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in (10, 500, 990):
        abar = sched.alphas_cumprod[t].double()
        sigma = float(((1 - abar) / abar).sqrt())
        with torch.no_grad():
            eps = unet(x_vp, t).sample
            ref = sched.step(eps, t, x_vp).pred_original_sample
            ours = den(x_vp * math.sqrt(1 + sigma**2), sigma)
        assert abs(float(den.sigma_to_t(torch.tensor([sigma], dtype=torch.float64))) - t) < 1e-6
        torch.testing.assert_close(ours, ref, atol=1e-4 * (1 + sigma), rtol=1e-4)
    mid = math.exp(0.5 * float(den.log_sigmas[500] + den.log_sigmas[501]))
    assert abs(float(den.sigma_to_t(torch.tensor([mid], dtype=torch.float64))) - 500.5) < 1e-9


def test_cm_adapter_matches_scheduler_denoised(tmp_path):
    from diffusers import CMStochasticIterativeScheduler

    from percept.models import DiffusersConsistencyDenoiser, from_pretrained

    unet = _tiny_unet(1)
    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0)
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "scheduler")
    den = from_pretrained(tmp_path)
    assert isinstance(den, DiffusersConsistencyDenoiser) and den.is_consistency_model
    for index in (5, 22, 35):
        sched.set_timesteps(timesteps=[index])
        t, sigma = sched.timesteps[0], float(sched.sigmas[0])
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(index)) * (1 + sigma)
        with torch.no_grad():
            out = unet(sched.scale_model_input(x, t), t).sample
            ref = sched.step(out, t, x).prev_sample  # one timestep: no noise added, the denoised x0
            ours = den(x, sigma)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_offline_hub_id_is_weights_unavailable():
    from percept.models import from_pretrained

    # local_files_only behaves as a machine without network does, without waiting for time-outs.
    with pytest.raises(WeightsUnavailable, match="huggingface-cli download"):
        from_pretrained("percept-tests/no-such-model", local_files_only=True)


def test_a_hub_id_offline_fails_at_once_with_one_line(monkeypatch):
    """Not in the cache and no hub to ask: the error comes before any download attempt (the hub
    client's own retries took most of a minute)."""
    from percept.models import diffusers as adapters

    asked = []
    monkeypatch.setattr(adapters, "hub_reachable", lambda timeout=3.0: asked.append(1) or False)
    with pytest.raises(WeightsUnavailable, match="not in the local cache.*cannot reach"):
        adapters.from_pretrained("percept-tests/no-such-model")
    assert asked
