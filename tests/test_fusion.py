"""Paper 2's latent fusion module: tau = 0 is the base decode bit for bit, the file is untouched,
training lowers the loss, PSNR falls monotonically with tau, seeds reproduce, bad input is one line."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from percept.codecs.container import decode_file, encode_image
from percept.codecs.project import load_project_model
from percept.errors import PerceptError
from percept.fusion.aux_encoder import freeze, make_aux_encoder
from percept.fusion.decode import base_codec_of, decode_file_fused, decode_payload
from percept.fusion.latents import from_image, from_strings, synthesize
from percept.fusion.module import FusionSampling, LatentFusion, check_tau, load_fusion, save_fusion
from percept.fusion.network import EDMLoss, LatentDenoiser, LatentFusionNet
from percept.hub import runs
from percept.training.fusion import residual_pairs

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # CompressAI's torch.jit.script
    pytest.mark.usefixtures("one_thread"),
]


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A photo-like test image: smooth colour fields plus fine texture, [1,3,h,w] in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    x = x + 0.06 * torch.randn(1, 3, h, w, generator=g)
    return x.clamp(0, 1).mul(255).round().div(255)


@pytest.fixture(scope="module")
def codec_model():
    return freeze(load_project_model("percept-hyperprior", 1))


def tiny_fusion(codec_model, design="blend", seed=0, **sampling) -> LatentFusion:
    torch.manual_seed(seed)
    net = LatentFusionNet(codec_model.g_s[0].in_channels, width=16, blocks=1, emb=16)
    for (
        p
    ) in net.parameters():  # an untrained but non-trivial network (the output layer starts at 0)
        p.data.add_(0.05 * torch.randn_like(p))
    sampling = FusionSampling(design=design, **{"steps": 2, **sampling})
    return LatentFusion(codec_model, LatentDenoiser(net).eval(), codec_name="percept-hyperprior",
                        quality=1, sampling=sampling)  # fmt: skip


@pytest.fixture(scope="module")
def trained(codec_model):
    """A tiny module trained on one image toward an auxiliary encoder whose latents are twice the
    base's (a residual that the decoded latents predict, so a tiny network can learn it)."""
    aux = make_aux_encoder(codec_model)
    with torch.no_grad():
        aux[-1].weight.mul_(2.0)
    freeze(aux)
    x = smooth_image(128, 128, seed=3)
    cond, r = residual_pairs(codec_model, aux, x)
    fusion = tiny_fusion(codec_model, steps=2)
    denoiser = fusion.denoiser.train()
    denoiser.residual_std.copy_(r.std(dim=(0, 2, 3)).clamp_min(1e-2))
    denoiser.condition_std.copy_(cond.std(dim=(0, 2, 3)).clamp_min(1e-2))
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    loss_fn, g = EDMLoss(), torch.Generator().manual_seed(0)
    target, cond = denoiser.from_latent(r).expand(4, -1, -1, -1), cond.expand(4, -1, -1, -1)

    def held_loss() -> float:  # the same noise levels and noise every time
        with torch.no_grad():
            return loss_fn(denoiser, target, cond, torch.Generator().manual_seed(123)).item()

    before = held_loss()
    for _ in range(200):
        loss = loss_fn(denoiser, target, cond, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_loss()
    denoiser.eval()
    return fusion, x, (before, after)


def test_latents_from_image_equal_the_bitstreams(codec_model):
    x = smooth_image(128, 192)
    _, latents = from_image(codec_model, x)
    enc = codec_model.compress(x)
    decoded = from_strings(codec_model, enc["strings"], enc["shape"])
    assert torch.equal(latents.y_hat, decoded.y_hat)
    ref = codec_model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.equal(synthesize(codec_model, decoded.y_hat), ref)


def test_tau_zero_is_the_base_decode_bit_for_bit(codec_model):
    fusion = tiny_fusion(codec_model)
    x = smooth_image(96, 130)
    data = encode_image(x, base_codec_of(fusion))
    base, _ = decode_file(data)
    fused, _ = decode_file_fused(data, fusion, 0.0, seed=5)
    assert torch.equal(base, fused)
    _, latents = from_image(
        codec_model, torch.nn.functional.pad(x, (0, 62, 0, 32), mode="replicate")
    )
    assert fusion.fuse(latents, 0.0) is latents.y_hat  # not a computation that happens to equal it
    assert not torch.equal(decode_file_fused(data, fusion, 0.5, seed=5)[0], base)


def test_the_module_leaves_the_bitstream_unchanged(codec_model):
    x = smooth_image(64, 64, seed=2)
    before = encode_image(x, base_codec_of(tiny_fusion(codec_model)))
    fusion = tiny_fusion(codec_model)
    decode_file_fused(before, fusion, 1.0)
    assert encode_image(x, base_codec_of(fusion)) == before


def test_training_lowers_the_loss(trained):
    _, _, (before, after) = trained
    assert after < 0.9 * before, (before, after)  # an untrained network keeps `before`


def psnr(a, b) -> float:
    return -10 * math.log10(torch.mean((a - b) ** 2).item())


@pytest.mark.parametrize("design", ["blend", "both"])
def test_psnr_does_not_rise_with_tau(trained, design):
    fusion, x, _ = trained
    fusion = LatentFusion(fusion.codec_model, fusion.denoiser, codec_name="percept-hyperprior",
                          quality=1, sampling=FusionSampling(design=design, steps=2))  # fmt: skip
    _, latents = from_image(fusion.codec_model, x)
    values = [
        psnr(fusion.decode_latents(latents, tau, torch.Generator().manual_seed(0)), x)
        for tau in (0, 0.25, 0.5, 0.75, 1)
    ]
    assert all(b <= a + 0.02 for a, b in zip(values, values[1:])), values
    assert values[-1] < values[0] - 0.1, values


def test_odd_sizes_and_seeds(codec_model):
    fusion = tiny_fusion(codec_model, eta=1.0)
    data = encode_image(smooth_image(37, 53), base_codec_of(fusion))
    a, record = decode_file_fused(data, fusion, 0.7, seed=1)
    b, _ = decode_file_fused(data, fusion, 0.7, seed=1)
    c, _ = decode_file_fused(data, fusion, 0.7, seed=2)
    assert a.shape == (1, 3, 37, 53) and (record.height, record.width) == (37, 53)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.round(a * 255) / 255)  # 8-bit values, as the PNG holds them


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan"), "abc", None])
def test_bad_tau_is_refused(tau):
    with pytest.raises(PerceptError, match="tau must be"):
        check_tau(tau)


def test_a_file_of_another_codec_or_rate_is_refused(codec_model, tmp_path):
    from percept.codecs import get_codec

    fusion = tiny_fusion(codec_model)
    jpeg = encode_image(smooth_image(64, 64), get_codec("jpeg", 30))
    with pytest.raises(
        PerceptError, match="trained for percept-hyperprior q1, but the file is jpeg"
    ):
        decode_file_fused(jpeg, fusion, 0.5)
    q2 = encode_image(smooth_image(64, 64), get_codec("percept-hyperprior", 2))
    with pytest.raises(PerceptError, match="file is percept-hyperprior q2"):
        decode_file_fused(q2, fusion, 0.5)


def saved(fusion: LatentFusion, path):
    """A fusion module file with the card a loader needs (this module's codec, net and sampling)."""
    from dataclasses import asdict

    card = {"codec": fusion.codec_name, "quality": fusion.quality,
            "net": fusion.denoiser.net.config, "sampling": asdict(fusion.sampling)}  # fmt: skip
    return save_fusion(fusion.denoiser, card, path)


def test_saved_module_reloads_and_decodes_identically(codec_model, tmp_path):
    fusion = tiny_fusion(codec_model)
    path = saved(fusion, tmp_path / "f.safetensors")
    again = load_fusion(path, codec_model=codec_model)
    payload = decode_file(encode_image(smooth_image(64, 64), base_codec_of(fusion)))[1].payload
    a = decode_payload(fusion, payload, 0.6, torch.Generator().manual_seed(0))
    assert torch.equal(a, decode_payload(again, payload, 0.6, torch.Generator().manual_seed(0)))


def _percept(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "percept.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_cli_tau_zero_writes_the_base_decodes_png_bytes(codec_model, tmp_path):
    fusion = tiny_fusion(codec_model)
    module = saved(fusion, tmp_path / "f.safetensors")
    image = tmp_path / "in.png"
    from percept.core.images import save_png

    save_png(smooth_image(48, 80), image)
    assert _percept("encode", image, tmp_path / "a.prcp", "--codec", "percept-hyperprior",
                    "--quality", "1").returncode == 0  # fmt: skip
    assert _percept("decode", tmp_path / "a.prcp", tmp_path / "base.png").returncode == 0
    done = _percept(
        "decode", tmp_path / "a.prcp", tmp_path / "t0.png", "--fusion", module, "--tau", 0
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t0.png").read_bytes() == (tmp_path / "base.png").read_bytes()
    done = _percept(
        "decode", tmp_path / "a.prcp", tmp_path / "t1.png", "--fusion", module, "--tau", 1
    )
    assert (
        done.returncode == 0
        and (tmp_path / "t1.png").read_bytes() != (tmp_path / "base.png").read_bytes()
    )
    for bad in ("1.5", "nan", "x"):
        done = _percept(
            "decode", tmp_path / "a.prcp", tmp_path / "bad.png", "--fusion", module, "--tau", bad
        )
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert "tau must be" in done.stderr and not (tmp_path / "bad.png").exists()
    assert (
        _percept(
            "encode", image, tmp_path / "j.prcp", "--codec", "jpeg", "--quality", "20"
        ).returncode
        == 0
    )
    done = _percept("decode", tmp_path / "j.prcp", tmp_path / "j.png", "--fusion", module)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "non-learned codec" in done.stderr
    done = _percept("decode", tmp_path / "j.prcp", tmp_path / "j.png", "--fusion", "auto")
    assert done.returncode == 2 and "has no latent fusion module" in done.stderr


@pytest.fixture(scope="module")
def aux_run(tmp_path_factory):
    """A tiny stage-(b) run on the training photos."""
    from percept.hub.data import imagenet_sample_paths
    from percept.training.fusion import AuxConfig, load_config, train_aux

    if not imagenet_sample_paths("train"):
        pytest.skip("imagenet-sample not found: set PERCEPT_DATA to a folder with imagenet-sample/")
    out = tmp_path_factory.mktemp("aux")
    cfg = load_config("aux-tiny", AuxConfig, {"train_images": 8})
    summary = train_aux(cfg, out)
    return out, summary


def test_both_stages_train_resume_and_publish(aux_run, tmp_path):
    from percept.hub import zoo
    from percept.training.fusion import FusionConfig, load_config, publish_fusion, train_fusion

    aux_dir, summary = aux_run
    assert summary["step"] == 4 and (aux_dir / "aux-encoder.safetensors").is_file()
    held = [r for r in runs.read_log(aux_dir) if r.get("kind") == "val"]
    assert [r["step"] for r in held] == [0, 2, 4] and held[0]["psnr_aux"] == held[0]["psnr_base"]
    over = {"aux_run": str(aux_dir), "train_images": 8, "steps": 2}
    cfg = load_config("fusion-tiny", FusionConfig, over)
    out = tmp_path / "fusion"
    assert train_fusion(cfg, out)["step"] == 2
    with pytest.raises(PerceptError, match="already holds a run"):
        train_fusion(cfg, out)
    with pytest.raises(PerceptError, match="different config"):
        train_fusion(
            load_config("fusion-tiny", FusionConfig, {**over, "lr": 1.0}), out, resume=True
        )
    longer = load_config("fusion-tiny", FusionConfig, {**over, "steps": 4})  # a longer schedule
    assert train_fusion(longer, out, resume=True)["step"] == 4
    entry = publish_fusion(out, "fusion-test", folder=tmp_path / "zoo")
    card = entry["card"]
    assert card["kind"] == "fusion" and card["steps"] == 4 and card["quality"] == 1
    assert card["aux_encoder"]["heldout"] and card["history"]["val"]
    assert zoo.sha256_file(tmp_path / "zoo" / "fusion-test.safetensors") == entry["sha256"]


def test_the_harness_carries_fuse_methods(tmp_path):
    from percept.eval.harness import output_images, run
    from percept.eval.results import format_summary

    out = tmp_path / "f.json"
    results = run("skimage", {"percept-hyperprior": [1]}, ["decode", "fuse:0", "fuse:1"], out=out,
                  crop="crop64", limit=2, swd_seeds=(0,), deep_metrics=(), progress=False)  # fmt: skip
    assert results["config"]["fusion"] == {"percept-hyperprior:1": "fusion-hyperprior-q1"}
    assert len(results["config"]["fusion_sha256"]["fusion-hyperprior-q1"]) == 64
    plain = output_images(out, results, "percept-hyperprior", 1, "decode")
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain, output_images(out, results, "percept-hyperprior", 1, "fuse:0"))
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(plain, output_images(out, results, "percept-hyperprior", 1, "fuse:1"))
    )
    rows = {r["method"]: r for r in results["rows"] if r["image"] == results["rows"][0]["image"]}
    assert rows["fuse:1"]["bpp"] == rows["decode"]["bpp"]  # the same file
    assert "fuse:1" in format_summary(results)
    with pytest.raises(PerceptError, match="jpeg has no latent fusion module"):
        run(
            "skimage",
            {"jpeg": [20]},
            ["decode", "fuse:1"],
            out=tmp_path / "j.json",
            crop="crop64",
            limit=1,
        )
    with pytest.raises(PerceptError, match="fuse:TAU"):
        run("skimage", {"percept-hyperprior": [1]}, ["fuse:2"], out=tmp_path / "b.json", limit=1)
