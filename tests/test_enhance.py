"""The enhancer: contract, presets and their errors, seeds, DPS through a CompressAI model, the CLI hook."""

from __future__ import annotations

from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch

from percept.cli.codec import _enhance_decoded as enhance_decoded
from percept.codecs.base import operator_of
from percept.codecs.compressai_codec import CompressAIOperator
from percept.core.denoiser import is_consistency_model
from percept.core.samplers import per_image_generators
from percept.core.schedules import karras_sigmas
from percept.enhancer.interpolate import interpolate
from percept.enhancer.pipeline import Enhancer, enhance
from percept.enhancer.presets import PRESETS, EnhancerConfig
from percept.errors import PerceptError
from percept.models import GaussianFlowMap, GaussianMixtureDenoiser


def shrink_denoiser(x, sigma):
    """Posterior mean of N(0, 0.1 I) data: a cheap exact denoiser for any image size."""
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return x * 0.1 / (0.1 + s**2)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_presets_are_data_with_nfe():
    assert {"fast", "medium", "slow"} <= set(PRESETS)
    assert PRESETS["fast"].nfe == 1 and PRESETS["fast"].needs_consistency_model
    assert (
        PRESETS["medium"].sampler == "dpmpp_2m"
        and PRESETS["medium-sde"].sampler == "euler_ancestral"
    )
    assert PRESETS["slow"].sampler == "dps" and PRESETS["slow"].needs_differentiable_codec
    with pytest.raises(AttributeError):
        PRESETS["fast"].steps = 3


def test_contract_range_seed_and_batch_independence(images):
    y = enhance(
        images, shrink_denoiser, 0.5, "medium-sde", generator=torch.Generator().manual_seed(0)
    )
    assert y.shape == images.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.allclose(y, images)
    again = enhance(
        images, shrink_denoiser, 0.5, "medium-sde", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(y, again)
    first = enhance(
        images[:1], shrink_denoiser, 0.5, "medium-sde", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(y[:1], first)
    gens = per_image_generators(torch.Generator().manual_seed(0), 3)
    last = enhance(
        images[2:], shrink_denoiser, 0.5, "euler_ancestral@30", generator=[gens[2]]
    )
    torch.testing.assert_close(y[2:], last)
    torch.testing.assert_close(enhance(images, shrink_denoiser, 0.0), images)


def test_fast_preset_needs_a_consistency_model(images):
    gmm = GaussianMixtureDenoiser(torch.zeros(1, 192), torch.eye(192)[None] * 0.1)
    with pytest.raises(PerceptError, match="consistency model.*medium"):
        enhance(images, gmm, 0.4, "fast")
    flow = GaussianFlowMap(torch.zeros(192), torch.eye(192) * 0.1)
    y = enhance(images, flow, 0.4, "fast", generator=torch.Generator().manual_seed(1))
    # One step of an exact flow map from x_hat + sigma eps (eq. 9-10, 15), checked by hand:
    gens = per_image_generators(torch.Generator().manual_seed(1), 3)
    noisy = images * 2 - 1 + 0.4 * torch.stack([torch.randn(3, 8, 8, generator=g) for g in gens])
    torch.testing.assert_close(y, ((flow.flow(noisy, 0.4, 0.0) + 1) / 2).clamp(0, 1))
    from percept.models import ConsistencyDenoiser

    assert is_consistency_model(ConsistencyDenoiser(torch.nn.Identity()))


def test_slow_preset_needs_a_differentiable_codec(images):
    with pytest.raises(PerceptError, match="differentiable codec"):
        enhance(images, shrink_denoiser, 0.4, "slow")
    jpeg = SimpleNamespace(name="jpeg", quality=50, encode=lambda x: b"", decode=lambda b: None)
    assert operator_of(jpeg) is None
    with pytest.raises(PerceptError, match="differentiable codec"):
        enhance(images, shrink_denoiser, 0.4, "slow", operator=operator_of(jpeg))
    for bad in ("auto", float("nan"), float("inf"), -0.1, "0.1"):
        with pytest.raises(PerceptError, match="sigma must be"):
            enhance(images, shrink_denoiser, bad, "medium")


@pytest.fixture(scope="module")
def operator():
    from compressai.models import ScaleHyperprior

    torch.manual_seed(0)
    model = ScaleHyperprior(N=8, M=8)
    with torch.no_grad():  # untrained latents round to 0; scale them so A carries information
        model.g_a[-1].weight.mul_(30)
    return CompressAIOperator(model)


def test_dps_pulls_towards_the_measurement(images, operator):
    x = images[:2]
    xg = x.clone().requires_grad_(True)
    operator(xg).sum().backward()
    assert float(xg.grad.abs().sum()) > 0  # straight-through rounding passes gradients
    y = operator(x).detach()  # the decoded image is the measurement
    residual = {}
    for zeta in (0.0, 3.0):
        out = enhance(
            y,
            shrink_denoiser,
            0.3,
            EnhancerConfig("slow", steps=8, zeta=zeta),
            operator=operator,
            generator=torch.Generator().manual_seed(0),
        )
        residual[zeta] = (operator(out) - y).flatten(1).norm(dim=1)
    assert bool((residual[3.0] < 0.7 * residual[0.0]).all())


def test_auto_sigma_uses_the_calibration_table(images, tmp_path, monkeypatch):
    import percept.enhancer.table as table

    monkeypatch.setattr(table, "table_path", lambda: tmp_path / "calibration.json")
    enhancer = Enhancer(shrink_denoiser, "medium", prior_name="p")
    with pytest.raises(
        table.CalibrationMissing, match="percept calibrate --codec jpeg --quality 5"
    ):
        enhancer.table_sigma("jpeg", 5)
    table.store_sigma("jpeg", 5, "p", "medium", 0.25, {"mse_ratio": 2.01})
    sigma = enhancer.table_sigma("jpeg", 5)
    auto = enhancer(images, sigma, generator=torch.Generator().manual_seed(0))
    with pytest.raises(PerceptError, match="name"):  # a model without a name has no table entry
        Enhancer(shrink_denoiser, "medium").table_sigma("jpeg", 5)
    assert sigma == 0.25
    # the Enhancer pads to the prior's multiple and crops back: the same as enhance on the padded
    padded = torch.nn.functional.pad(images, (0, 24, 0, 24), mode="replicate")
    fixed = enhance(
        padded, shrink_denoiser, 0.25, "medium", generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(auto, fixed[..., :8, :8])


def test_interpolate_is_convex(images):
    other = images.flip(0)
    torch.testing.assert_close(interpolate(images, other, 0.0), images)
    torch.testing.assert_close(interpolate(images, other, 1.0), other)
    mid = interpolate(images, other, torch.tensor([0.25, 0.5, 0.75]))
    torch.testing.assert_close(mid[1], (images[1] + other[1]) / 2)
    with pytest.raises(ValueError):
        interpolate(images, other, 1.5)


def test_enhance_decoded_with_a_tiled_diffusers_consistency_model(tmp_path):
    from diffusers import CMStochasticIterativeScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(4, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).save_pretrained(tmp_path / "unet")
    CMStochasticIterativeScheduler(num_train_timesteps=40).save_pretrained(tmp_path / "scheduler")
    record = SimpleNamespace(codec="jpeg", quality=5, params={"quality": 5})
    x_hat = torch.rand(1, 3, 11, 13, generator=torch.Generator().manual_seed(0))
    args = Namespace(
        enhance="fast", prior=str(tmp_path), sigma="0.3", seed=0, steps=None, weights=None,
        consistency=False, precision="fp32",
    )  # fmt: skip
    y = enhance_decoded(x_hat, record, args)
    assert y.shape == x_hat.shape and not torch.allclose(y, x_hat)
    torch.testing.assert_close(y, enhance_decoded(x_hat, record, args))
    with pytest.raises(PerceptError, match="--prior"):
        enhance_decoded(x_hat, record, Namespace(**{**vars(args), "prior": None}))
    with pytest.raises(PerceptError, match="calibrat"):
        enhance_decoded(
            x_hat, record, Namespace(**{**vars(args), "sigma": "auto", "prior": str(tmp_path)})
        )


def test_karras_schedule_is_what_enhance_runs(images):
    seen = []
    enhance(
        images,
        shrink_denoiser,
        0.4,
        "medium",
        callback=seen.append,
        generator=torch.Generator().manual_seed(0),
    )
    assert [round(c["sigma"], 6) for c in seen] == [
        round(float(s), 6) for s in karras_sigmas(6, 0.4)[:-1]
    ]


def test_fast_2_renoises_to_half_sigma(images):
    from percept.core.schedules import halving_sigmas

    assert halving_sigmas(3, 0.8).tolist() == [0.8, 0.4, 0.2, 0.0]
    seen = []
    flow = GaussianFlowMap(torch.zeros(192), torch.eye(192) * 0.1)
    enhance(images, flow, 0.6, "fast-2", callback=lambda info: seen.append(float(info["sigma"])))
    assert seen == pytest.approx([0.6, 0.3])  # not a second call at sigma_min (a no-op for a CM)


def test_bf16_precision_is_close_to_fp32_and_checked(images):
    from contextlib import nullcontext

    from percept.core.precision import native_bf16
    from percept.models import EDMDenoiser, UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4))
    with torch.no_grad():  # a fresh UNet's output layer is zero: give it something to compute
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    den = EDMDenoiser(net).eval()
    kw = dict(config="euler@2", generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = enhance(images, den, 0.3, **kw)
        kw["generator"] = torch.Generator().manual_seed(0)
        # emulated bf16 (no AVX512-BF16/AMX) is far slower than fp32: the caller is told
        emulated = not native_bf16(images.device.type)
        with pytest.warns(RuntimeWarning, match="emulated") if emulated else nullcontext():
            half = enhance(images, den, 0.3, precision="bf16", **kw)
    assert half.dtype == torch.float32
    assert 0 < float((full - half).abs().max()) < 0.02
    with pytest.raises(PerceptError, match="precision"):
        enhance(images, den, 0.3, precision="fp8")


def test_channels_last_is_a_layout_not_a_result(images):
    from percept.models import EDMDenoiser, UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    den = EDMDenoiser(net).eval()
    outs = [
        enhance(
            images,
            den,
            0.3,
            "euler@2",
            channels_last=layout,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        for layout in (None, True, False)
    ]
    assert torch.equal(outs[0], outs[1])  # on CPU the default is channels-last
    assert float((outs[1] - outs[2]).abs().max()) < 1e-4


def test_many_images_in_batches_equal_each_alone(images):
    enhancer = Enhancer(shrink_denoiser, "medium-sde@5")
    x_hats = [images[:1], images[1:2], images[2:], torch.rand(1, 3, 5, 7)]
    sigmas, seeds = [0.3, 0.3, 0.5, 0.3], [4, 5, 6, 7]
    together = enhancer.many(x_hats, sigmas, seeds, batch_size=2)
    for x, sigma, seed, y in zip(x_hats, sigmas, seeds, together):
        torch.testing.assert_close(y, enhancer(x, sigma, seed=seed), rtol=0, atol=1e-6)
    with pytest.raises(PerceptError, match="one sigma and one seed"):
        enhancer.many(x_hats, sigmas[:2], seeds)


def test_the_fast_path_is_exact_fp32_eager_on_cpu_and_everything_on_cuda():
    from percept.core.precision import FastPath

    assert FastPath.fastest("cpu") == FastPath()  # CPU outputs are the pinned reference
    cuda = FastPath.fastest("cuda")
    assert cuda.compile and cuda.channels_last
    assert Enhancer(shrink_denoiser).fast_path == FastPath()
    with pytest.raises(PerceptError, match="precision"):
        FastPath("fp8")


@pytest.mark.gpu
def test_the_gpu_fast_path_stays_within_40_db_of_fp32_eager(photo):
    """bf16 autocast, channels-last and a compiled network with CUDA graphs against fp32 eager, on
    the same noise: the issue's tolerance, PSNR between them at least 40 dB."""
    from percept.core.precision import FastPath
    from percept.enhancer.pipeline import load_prior
    from percept.metrics import psnr

    x = photo[..., :256, :256].cuda()
    prior = load_prior("percept-cm-s")
    eager = Enhancer(prior, "fast", device="cuda", fast_path=FastPath())
    fast = Enhancer(load_prior("percept-cm-s"), "fast", device="cuda")
    assert fast.fast_path == FastPath.fastest("cuda")
    for _ in range(3):  # the first calls compile and capture
        y_fast = fast(x, 0.5, seed=0)
    y_eager = eager(x, 0.5, seed=0)
    assert float(psnr(y_fast.float().cpu(), y_eager.float().cpu())) >= 40


def test_the_enhancer_says_whether_its_models_run_a_setting(images):
    flow = GaussianFlowMap(torch.zeros(192), torch.eye(192) * 0.1)
    gmm = GaussianMixtureDenoiser(torch.zeros(1, 192), torch.eye(192)[None] * 0.1)
    assert not Enhancer(gmm, "fast").supported and Enhancer(gmm, "medium").supported
    both = Enhancer(gmm, "medium", consistency_model=flow)
    assert both.with_config("fast").supported and both.with_config("fast").denoiser is flow
    assert both.denoiser is gmm and Enhancer(flow, "fast").supported
