"""Training the prior and the consistency model: tiny configs, seconds of CPU each."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

from percept.cli.train import main as train_main
from percept.errors import PerceptError
from percept.hub import runs
from percept.models import ConsistencyDenoiser
from percept.training import runtime
from percept.training.distill import DistillConfig, scales, train_distill
from percept.training.prior import PriorTrainConfig, train_prior

TINY_UNET = {"channels": [8, 16], "blocks": [1, 1], "mid_blocks": 1, "emb_dim": 16, "groups": 4}


def tiny_config(**overrides) -> PriorTrainConfig:
    base = dict(
        name="test-tiny", unet=TINY_UNET, crop=32, batch_size=8, steps=40, lr=3e-3, warmup_steps=2,
        decay_start=1000, ema_decay=0.9, bf16=False, train_images=8, val_images=2, val_crop=32,
        log_every=1, val_every=20,
    )  # fmt: skip
    base.update(overrides)
    return PriorTrainConfig(**base)


# bit-identical resumes need one reduction order: every test on one thread (conftest's one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_prior_loss_falls(tmp_path):
    summary = train_prior(tiny_config(), tmp_path, progress=False, export=False)
    losses = [r["loss"] for r in runs.read_log(tmp_path) if "loss" in r]
    assert summary["step"] == 40 and len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    vals = [r["val_psnr"] for r in runs.read_log(tmp_path) if "val_psnr" in r]
    assert len(vals) == 2 and set(vals[0]) == {"0.05", "0.1", "0.2", "0.4", "1", "2"}


def test_resume_is_exact(tmp_path):
    cfg = tiny_config(steps=12, val_every=6)
    train_prior(cfg, tmp_path / "straight", progress=False, export=False)
    train_prior(cfg, tmp_path / "split", max_steps=5, progress=False, export=False)
    train_prior(cfg, tmp_path / "split", resume=True, progress=False, export=False)
    a = runs.read_checkpoint(tmp_path / "straight")
    b = runs.read_checkpoint(tmp_path / "split")
    assert a["step"] == b["step"] == 12
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))


def test_checkpoint_is_weights_only_loadable_and_refuses_overwrite(tmp_path):
    train_prior(tiny_config(steps=2), tmp_path, progress=False, export=False)
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    with pytest.raises(PerceptError, match="--resume"):
        train_prior(tiny_config(steps=2), tmp_path, progress=False)
    with pytest.raises(PerceptError, match=r"different config \(keys \['steps'\]\)"):
        train_prior(tiny_config(steps=3), tmp_path, resume=True, progress=False)
    # The description is prose: editing it does not strand the run.
    reworded = dataclasses.replace(tiny_config(steps=3), description="reworded")
    assert runtime.config_changes(tiny_config(steps=3).to_dict(), reworded.to_dict()) == []
    train_prior(dataclasses.replace(tiny_config(steps=2), description="reworded"), tmp_path,
                resume=True, progress=False, export=False)  # fmt: skip


def test_stop_request_catches_sigterm():
    with runtime.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested


def test_learning_rate_schedule():
    assert runtime.learning_rate(0, 1e-3, 10, 100) == pytest.approx(1e-4)
    assert runtime.learning_rate(50, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert runtime.learning_rate(400, 1e-3, 10, 100) == pytest.approx(5e-4)


def test_cli_trains_and_exports(tmp_path):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(tiny_config(steps=3, val_every=2).to_dict()))
    out = tmp_path / "run"
    assert (
        train_main(
            ["train", "prior", "--config", str(cfg_path), "--out", str(out), "--threads", "1"]
        )
        == 0
    )
    assert (out / "ema.safetensors").is_file()
    card = json.loads((out / "ema.safetensors.json").read_text())
    assert card["kind"] == "prior" and card["steps"] == 3 and card["val_psnr"] is not None
    # validated at step 2 and again at the end: the card's figure is that of the shipped weights
    assert [r["step"] for r in runs.read_log(out) if "val_psnr" in r] == [2, 3]
    with pytest.raises(PerceptError, match="unknown config"):
        train_main(["train", "prior", "--config", "no-such-config", "--out", str(tmp_path / "x")])


def test_distillation_scales_ascending_with_endpoints():
    s = scales(DistillConfig(name="x", num_scales=10))
    assert s[0].item() == pytest.approx(0.002) and s[-1].item() == pytest.approx(2.0)
    assert (s[1:] > s[:-1]).all()


@pytest.mark.parametrize("config", runtime.packaged_config_names("cm-"))
def test_distillation_scales_are_those_of_the_former_own_schedule(config):
    """distill.py had its own ascending karras_sigmas; it now takes core.schedules' (reversed,
    without the final 0): the sigmas of every packaged config stay bit-identical."""
    cfg = DistillConfig.from_dict(runtime.read_config(config, "cm-"))
    ramp = torch.linspace(0, 1, cfg.num_scales, dtype=torch.float64)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    assert torch.equal(scales(cfg), ((lo + ramp * (hi - lo)) ** cfg.rho).float())


def test_tiny_distillation_runs_and_keeps_boundary(tmp_path):
    teacher = tmp_path / "teacher"
    train_prior(tiny_config(steps=4, val_every=4), teacher, progress=False)
    cfg = DistillConfig(
        name="cm-test", teacher=str(teacher), num_scales=8, ema_decay=0.9, crop=32, batch_size=4,
        steps=4, lr=1e-4, warmup_steps=1, bf16=False, train_images=8, val_images=2, val_crop=32,
        log_every=1, val_every=4,
    )  # fmt: skip
    summary = train_distill(cfg, tmp_path / "cm", progress=False)
    assert summary["step"] == 4 and summary["val_psnr"] is not None
    losses = [r["loss"] for r in runs.read_log(tmp_path / "cm") if "loss" in r]
    assert len(losses) == 4 and all(l >= 0 and l == l for l in losses)  # noqa: E741
    from percept.hub.zoo import load_denoiser

    cm = load_denoiser(tmp_path / "cm" / "ema.safetensors")
    assert isinstance(cm, ConsistencyDenoiser)
    x = torch.randn(1, 3, 24, 20)
    assert torch.equal(cm(x, torch.tensor(cfg.sigma_min)), x)
    assert cm(x, torch.tensor(0.5)).shape == x.shape


def test_distillation_resume_refuses_a_teacher_whose_weights_changed(tmp_path):
    teacher = tmp_path / "teacher"
    train_prior(tiny_config(steps=100, val_every=2), teacher, max_steps=2, progress=False)
    cfg = DistillConfig(
        name="cm-test", teacher=str(teacher), num_scales=8, ema_decay=0.9, crop=32, batch_size=4,
        steps=6, lr=1e-4, warmup_steps=1, bf16=False, train_images=8, val_images=2, val_crop=32,
        log_every=1, val_every=100,
    )  # fmt: skip
    train_distill(cfg, tmp_path / "cm", max_steps=2, progress=False)
    assert (
        train_distill(cfg, tmp_path / "cm", resume=True, max_steps=3, progress=False)["step"] == 3
    )
    # the teacher trains on under the same name: the run must not go on against other targets
    train_prior(
        tiny_config(steps=100, val_every=2), teacher, resume=True, max_steps=4, progress=False
    )
    with pytest.raises(PerceptError, match="other weights"):
        train_distill(cfg, tmp_path / "cm", resume=True, progress=False)


def test_init_from_published_weights_continues_step_count(tmp_path):
    from percept.training.prior import export_model

    cfg = tiny_config(steps=3)
    train_prior(cfg, tmp_path / "first", progress=False, export=False)
    weights = export_model(tmp_path / "first", tmp_path / "w.safetensors")
    cfg2 = tiny_config(steps=5)
    summary = train_prior(
        cfg2, tmp_path / "second", init_from=weights, progress=False, export=False
    )
    assert summary["step"] == 5  # 3 steps from the card plus 2 new ones
    ck = torch.load(tmp_path / "second" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 5


def test_init_from_refuses_another_network_shape(tmp_path):
    from percept.training.prior import export_model

    train_prior(tiny_config(steps=2), tmp_path / "first", progress=False, export=False)
    weights = export_model(tmp_path / "first", tmp_path / "w.safetensors")
    other = tiny_config(steps=4, unet={**TINY_UNET, "channels": [16, 32]})
    with pytest.raises(PerceptError, match="another shape"):
        train_prior(other, tmp_path / "second", init_from=weights, progress=False, export=False)


def test_a_run_directory_takes_one_trainer_at_a_time(tmp_path):
    from percept.training import runtime

    held = runtime.lock_run(tmp_path)
    with pytest.raises(PerceptError, match="another process is training"):
        train_prior(tiny_config(steps=2), tmp_path, progress=False, export=False)
    held.close()
    train_prior(tiny_config(steps=2), tmp_path, progress=False, export=False)


def test_cooldown_decays_lr_linearly_to_zero_then_stops(tmp_path):
    train_prior(
        tiny_config(steps=100, log_every=1), tmp_path, max_steps=4, progress=False, export=False
    )
    summary = train_prior(
        tiny_config(steps=100, log_every=1), tmp_path, resume=True, cooldown=5, progress=False,
        export=False,
    )  # fmt: skip
    assert summary["step"] == 9
    lrs = [r["lr"] for r in runs.read_log(tmp_path) if "lr" in r and r["step"] > 4]
    base = runtime.learning_rate(4, 3e-3, 2, 1000)
    assert lrs == pytest.approx([base * (1 - k / 5) for k in range(5)])
    with pytest.raises(PerceptError, match="cooldown"):
        train_prior(tiny_config(steps=100), tmp_path, resume=True, cooldown=0, progress=False)


def test_published_card_of_a_continued_run_starts_at_step_zero(tmp_path):
    from percept.hub.zoo import read_registry
    from percept.training.publish import publish_run

    train_prior(tiny_config(steps=4, val_every=2), tmp_path / "first", progress=False, export=False)
    publish_run(tmp_path / "first", "toy", folder=tmp_path / "zoo")
    train_prior(
        tiny_config(steps=8, val_every=2), tmp_path / "second", init_from=tmp_path / "zoo" / "toy.safetensors",
        progress=False, export=False,
    )  # fmt: skip
    publish_run(tmp_path / "second", "toy", folder=tmp_path / "zoo")
    card = read_registry(tmp_path / "zoo" / "zoo.json")["toy"]["card"]
    assert [r["step"] for r in card["history"]["val"]] == [2, 4, 6, 8]
    assert card["history"]["loss"][0]["step"] == 1 and card["history"]["loss"][-1]["step"] == 8
    assert len(card["commands"]) == 2 and card["steps"] == 8


def test_a_chain_of_unpublished_exports_keeps_the_whole_training_in_the_card(tmp_path):
    from percept.hub.zoo import read_registry
    from percept.training.publish import publish_run

    train_prior(tiny_config(steps=4, val_every=2), tmp_path / "a", progress=False)
    train_prior(
        tiny_config(steps=6, val_every=2), tmp_path / "b", init_from=tmp_path / "a" / "ema.safetensors",
        progress=False,
    )  # fmt: skip
    middle = json.loads((tmp_path / "b" / "ema.safetensors.json").read_text())
    assert [r["step"] for r in middle["history"]["val"]] == [2, 4, 6] and len(
        middle["commands"]
    ) == 2
    train_prior(
        tiny_config(steps=8, val_every=2, batch_size=4), tmp_path / "c",
        init_from=tmp_path / "b" / "ema.safetensors", progress=False, export=False,
    )  # fmt: skip
    publish_run(tmp_path / "c", "toy", folder=tmp_path / "zoo")
    card = read_registry(tmp_path / "zoo" / "zoo.json")["toy"]["card"]
    assert [r["step"] for r in card["history"]["val"]] == [2, 4, 6, 8]
    assert len(card["commands"]) == 3 and card["steps"] == 8
    assert card["images_seen"] == 6 * 8 + 2 * 4  # the last two steps at batch 4


def test_packed_crops_train_without_the_photos(tmp_path, monkeypatch):
    import numpy as np

    from percept.training.crops import PACK_ENV, center_crops, load_split, pack_crops

    pack = tmp_path / "crops.npz"
    meta = pack_crops(pack, size=48, per_image=2, val_size=32, limit=6)
    assert meta["train_crops"] == 2 * len(load_split("train", 6, min_side=48))
    assert meta["mib"] > 0 and json.loads(str(np.load(pack)["meta"]))["seed"] == 0
    photos_val = center_crops(load_split("val", 6, min_side=32), 32)
    assert train_main(["train", "pack", "--out", str(tmp_path / "big.npz"), "--size", "48",
                       "--limit", "3", "--max-mib", "60"]) == 0  # fmt: skip
    with pytest.raises(PerceptError, match="max-mib"):
        train_main(["train", "pack", "--out", str(tmp_path / "b.npz"), "--size", "48",
                    "--limit", "3", "--max-mib", "0.001"])  # fmt: skip
    assert not (tmp_path / "b.npz").exists()
    data_dir = os.environ["PERCEPT_DATA"]
    monkeypatch.setenv(PACK_ENV, str(pack))
    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path / "nowhere"))  # the photos are gone
    train = load_split("train", None, min_side=32)
    assert len(train) == meta["train_crops"] and train[0].shape == (3, 48, 48)
    assert train[0].dtype == torch.uint8
    # held-out crops are those the photos give: held-out figures stay comparable
    assert torch.equal(center_crops(load_split("val", None, min_side=32), 32), photos_val)
    with pytest.raises(PerceptError, match="pack again"):
        load_split("train", None, min_side=64)
    # a limit means the first N photos, whether they come packed or not (the sample's val photos
    # 10 and 11 of the first 50 have a side of 400 px, photos 13, 31, 40, ... are later and must
    # stay out; the stand-in's are 3, 7 and 11, and 12 is later)
    big = tmp_path / "big400.npz"
    monkeypatch.delenv(PACK_ENV)
    monkeypatch.setenv("PERCEPT_DATA", data_dir)
    pack_crops(big, size=400, val_size=400, limit=50)
    from_photos = center_crops(load_split("val", 12, min_side=400), 400)
    monkeypatch.setenv(PACK_ENV, str(big))
    assert len(load_split("val", None, min_side=400)) > len(from_photos) > 0
    assert torch.equal(center_crops(load_split("val", 12, min_side=400), 400), from_photos)
    monkeypatch.setenv(PACK_ENV, str(pack))
    summary = train_prior(
        tiny_config(steps=2, crop=32, val_crop=32), tmp_path / "run", progress=False, export=False
    )
    assert summary["step"] == 2 and summary["val_psnr"] is not None


def test_pack_photos_keeps_names_and_split_and_never_upscales(tmp_path, monkeypatch):
    from PIL import Image

    from percept.hub.data import imagenet_sample_paths
    from percept.training.crops import pack_photos

    originals, data_dir = imagenet_sample_paths("all")[:12], os.environ["PERCEPT_DATA"]
    meta = pack_photos(tmp_path / "small", short_side=96, quality=90, limit=12)
    assert meta["photos"] == 12 and meta["mib"] > 0
    assert json.loads((tmp_path / "small" / "pack.json").read_text())["short_side"] == 96
    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path / "small"))
    copies = imagenet_sample_paths("all")
    assert [p.name for p in copies] == [p.name for p in originals]
    assert [p.name for p in imagenet_sample_paths("val")] == [originals[0].name, originals[10].name]
    for src, dst in zip(originals, copies):
        with Image.open(src) as a, Image.open(dst) as b:
            assert min(b.size) == min(96, min(a.size))
            assert abs(b.size[0] / b.size[1] - a.size[0] / a.size[1]) < 0.02  # aspect kept
    monkeypatch.setenv("PERCEPT_DATA", data_dir)
    assert train_main(["train", "pack-photos", "--out", str(tmp_path / "big"), "--short-side",
                       "4000", "--limit", "2", "--max-mib", "60"]) == 0  # fmt: skip
    with Image.open(tmp_path / "big" / "imagenet-sample" / copies[0].name) as big:
        assert big.size == Image.open(originals[0]).size  # a photo smaller than asked stays as is
    with pytest.raises(PerceptError, match="max-mib"):
        train_main(["train", "pack-photos", "--out", str(tmp_path / "b"), "--limit", "2",
                    "--max-mib", "0.0001"])  # fmt: skip
    with pytest.raises(PerceptError, match="short-side"):
        pack_photos(tmp_path / "c", short_side=8)


def test_bf16_is_dropped_where_the_device_would_emulate_it(tmp_path, monkeypatch, capsys):

    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": False)
    assert runtime.bf16_for(False, "cpu", tmp_path) is False  # nothing asked, nothing said
    assert runs.read_log(tmp_path) == [] and capsys.readouterr().err == ""
    assert runtime.bf16_for(True, "cpu", tmp_path, step=7) is False
    (entry,) = runs.read_log(tmp_path)
    assert entry["step"] == 7 and entry["precision"] == "fp32" and "no native bf16" in entry["note"]
    assert "training in fp32" in capsys.readouterr().err
    # a config asking for bf16 trains (in fp32 here) and its log says so
    summary = train_prior(tiny_config(bf16=True, steps=2), tmp_path / "run", progress=False,
                          export=False)  # fmt: skip
    assert summary["step"] == 2
    assert any(r.get("precision") == "fp32" for r in runs.read_log(tmp_path / "run"))
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": True)
    assert runtime.bf16_for(True, "cpu") is True


def test_one_crop_helper_in_zero_one_for_every_kind_of_run():
    """Every run draws its crops through `crops.random_crops` ([0, 1]); at scale 1 a crop is a
    window of the photo itself, flipped or not."""
    from percept.training.crops import center_crops, random_crops

    g = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (3, 40, 50), generator=g, dtype=torch.uint8)
    a = random_crops([photo], 4, 16, torch.Generator().manual_seed(1))
    assert torch.equal(a, random_crops([photo], 4, 16, torch.Generator().manual_seed(1)))
    assert a.shape == (4, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1
    windows = photo.float().unfold(1, 16, 1).unfold(2, 16, 1) / 255  # [3, 25, 35, 16, 16]
    for crop in a:
        found = [
            torch.equal(windows[:, i, j], c)
            for c in (crop, crop.flip(-1))
            for i in range(windows.shape[1])
            for j in range(windows.shape[2])
        ]
        assert any(found)
    assert torch.equal(center_crops([photo], 16)[0], photo[:, 12:28, 17:33].float() / 255)
    scaled = random_crops([photo], 2, 16, torch.Generator().manual_seed(1), scale_range=(1.5, 2.0))
    assert scaled.shape == (2, 3, 16, 16) and not torch.equal(scaled, a[:2])
