"""The project's learned codec: training on tiny configs, exact resume, export, real-byte round trips."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import torch

from percept.cli.train import main
from percept.codecs.project import (
    PROJECT_CODECS,
    load_trained_codec,
    read_codec_config,
    roundtrip_is_exact,
)
from percept.errors import PerceptError
from percept.hub import runs
from percept.training.codec import (
    CodecTrainConfig,
    heldout_rd,
    load_config,
    lr_at,
    packaged_configs,
    train_codec,
)

# CompressAI's entropy models call the deprecated torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def tiny(**overrides) -> CodecTrainConfig:
    base = {
        "name": "codec-test", "architecture": "mean-scale-hyperprior", "N": 12, "M": 16, "quality": 3,
        "lmbda": 0.0067, "crop": 64, "batch_size": 4, "steps": 40, "lr": 5e-3, "train_images": 6,
        "val_images": 2, "val_crop": 64, "log_every": 1, "val_every": 20, "checkpoint_every": 1000,
    }  # fmt: skip
    base.update(overrides)
    return load_config(base)


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run that completes its schedule and exports its codec file."""
    out = tmp_path_factory.mktemp("codec-run")
    summary = train_codec(tiny(), out, threads=2)
    return out, summary


def test_packaged_configs_use_compressai_mse_lambdas():
    zoo_lambdas = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130}
    names = packaged_configs()
    for q, lmbda in zoo_lambdas.items():
        cfg = load_config(f"codec-hyperprior-q{q}")
        assert (cfg.quality, cfg.lmbda, cfg.architecture) == (q, lmbda, "mean-scale-hyperprior")
        assert PROJECT_CODECS["percept-hyperprior"][q] == cfg.name and cfg.name in names
    assert "codec-tiny" in names
    # the GPU recipe of the shipped codecs: same network and lambda as the rate it ships under,
    # stage 2 starting from a stage-1 run of this recipe
    gpu = [n for n in names if "-gpu" in n]
    assert len(gpu) == 6
    for name in gpu:
        cfg, base = load_config(name), load_config(name.split("-gpu")[0])
        assert (cfg.name, cfg.lmbda, cfg.N, cfg.M) == (base.name, base.lmbda, base.N, base.M)
        if name.endswith("-gpu2"):
            assert cfg.init_from in ("runs/gq1a", "runs/gq2a")


def test_config_errors_say_what_is_wrong():
    with pytest.raises(PerceptError, match="unknown codec config keys"):
        tiny(lamda=0.1)
    with pytest.raises(PerceptError, match="multiples of 64"):
        tiny(crop=32)
    with pytest.raises(PerceptError, match="no codec config"):
        load_config("codec-does-not-exist")


def test_lr_schedule_warms_up_then_decays():
    cfg = tiny(lr=1e-3, warmup_steps=10, steps=100, lr_decay_at=0.8, lr_decay_factor=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 50) == pytest.approx(1e-3)
    assert lr_at(cfg, 80) == pytest.approx(1e-4)


def test_tiny_training_lowers_the_loss(trained):
    out, summary = trained
    rows = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 41))
    first = sum(r["loss"] for r in rows[:8]) / 8
    last = sum(r["loss"] for r in rows[-8:]) / 8
    assert last < 0.7 * first, (first, last)
    vals = [r for r in read_log(out) if r.get("kind") == "val"]
    assert [v["step"] for v in vals] == [20, 40] and all(v["bpp"] > 0 for v in vals)
    assert summary["stopped_by"] == "schedule" and summary["step"] == 40


def test_resume_is_exact(tmp_path):
    cfg = tiny(steps=6, val_every=3, lr=1e-3)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_codec(cfg, straight, threads=2)
    first = train_codec(cfg, split, max_steps=4, threads=2)
    assert first["stopped_by"] == "limit" and "export" not in first
    with pytest.raises(PerceptError, match="--resume"):
        train_codec(cfg, split, threads=2)
    with pytest.raises(PerceptError, match="different config"):
        train_codec(dataclasses.replace(cfg, lmbda=0.01), split, resume=True)
    train_codec(cfg, split, resume=True, threads=2)
    a, b = runs.read_checkpoint(straight), runs.read_checkpoint(split)
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["torch_rng"], b["torch_rng"])

    def losses(rows):  # the split run also measures and logs its command at the session break
        return [{k: r[k] for k in ("step", "loss", "mse", "bpp", "aux", "lr")} for r in rows if "loss" in r]

    assert losses(read_log(straight)) == losses(read_log(split))


def test_codec_trains_from_packed_crops_without_the_photos(tmp_path, monkeypatch):
    from percept.training.crops import PACK_ENV, pack_crops

    cfg = tiny(steps=4, val_every=2)
    pack = tmp_path / "crops.npz"
    pack_crops(pack, size=64, val_size=64, limit=6)
    train_codec(cfg, tmp_path / "photos", max_steps=2, threads=2)
    monkeypatch.setenv(PACK_ENV, str(pack))
    monkeypatch.setenv("PERCEPT_DATA", str(tmp_path / "nowhere"))  # the photos are gone
    summary = train_codec(cfg, tmp_path / "packed", threads=2)
    assert summary["step"] == 4 and summary["stopped_by"] == "schedule"
    assert (tmp_path / "packed" / "codec-test.safetensors").is_file()
    assert [r["step"] for r in read_log(tmp_path / "packed") if "psnr" in r] == [2, 4]
    # a run started on the photos does not silently continue on other pixels
    with pytest.raises(PerceptError, match="different training images"):
        train_codec(cfg, tmp_path / "photos", resume=True, threads=2)
    with pytest.raises(PerceptError, match="pack again with a larger --val-size"):
        train_codec(tiny(val_crop=128), tmp_path / "bigval", threads=2)


def test_export_reloads_bit_exactly(trained):
    out, summary = trained
    path = out / "codec-test.safetensors"
    assert summary["export"] == str(path)
    model, config = load_trained_codec(path)
    assert (
        config["quality"] == 3 and config["steps_trained"] == 40 and config["heldout"]["step"] == 40
    )
    assert read_codec_config(path)["lmbda"] == 0.0067
    # A second reload must produce the same strings and reconstructions as the first.
    again, _ = load_trained_codec(path)
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(3))
    assert roundtrip_is_exact(model, again, x)


def test_bitstream_from_another_process_decodes_identically(trained):
    """Encode in a fresh interpreter, decode here: the file alone fixes the bitstream."""
    out, _ = trained
    path = out / "codec-test.safetensors"
    script = (
        "import sys, torch\n"
        "from percept.codecs.project import load_trained_codec\n"
        "model, _ = load_trained_codec(sys.argv[1])\n"
        "x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))\n"
        "enc = model.compress(x)\n"
        "print(' '.join(s.hex() for group in enc['strings'] for s in group))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    model, _ = load_trained_codec(path)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    enc = model.compress(x)
    y_hex, z_hex = done.stdout.split()
    assert [[bytes.fromhex(y_hex)], [bytes.fromhex(z_hex)]] == enc["strings"]
    theirs = model.decompress([[bytes.fromhex(y_hex)], [bytes.fromhex(z_hex)]], enc["shape"])
    assert torch.equal(theirs["x_hat"], model.decompress(enc["strings"], enc["shape"])["x_hat"])


def test_heldout_bpp_counts_real_bytes(trained):
    out, _ = trained
    model, _ = load_trained_codec(out / "codec-test.safetensors")
    x = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0))
    got = heldout_rd(model, x)
    nbytes = [
        sum(len(s) for group in model.compress(xi[None])["strings"] for s in group) for xi in x
    ]
    assert got["bpp"] == pytest.approx(sum(8 * n / (64 * 128) for n in nbytes) / 2)
    assert all(n > 0 for n in nbytes)


def test_registry_codec_round_trip_is_bit_exact(trained, photo):
    codecs = pytest.importorskip("percept.codecs")
    if not hasattr(codecs, "CompressAICodec"):
        pytest.fail("percept.codecs.CompressAICodec is missing: the codec registry is not in place")
    out, _ = trained
    model, _ = load_trained_codec(out / "codec-test.safetensors")
    codec = codecs.CompressAICodec(model, "percept-hyperprior", 3)
    x = photo[:, :, :256, :320]
    data = codec.encode(x)
    strings = model.compress(x)["strings"]
    assert len(data) >= sum(len(s) for group in strings for s in group)
    first, second = codec.decode(data), codec.decode(data)
    assert first.shape == x.shape and torch.equal(first, second)
    other = codecs.CompressAICodec(
        load_trained_codec(out / "codec-test.safetensors")[0], "percept-hyperprior", 3
    )
    assert other.encode(x) == data and torch.equal(other.decode(data), first)


def test_cli_lists_configs_and_refuses_to_overwrite(trained, capsys):
    out, _ = trained
    assert main(["train", "codec", "--list-configs"]) == 0
    assert "codec-hyperprior-q1" in capsys.readouterr().out
    with pytest.raises(PerceptError, match="already holds a run"):
        main(["train", "codec", "--config", str(out / "config.json"), "--out", str(out)])


def test_init_from_starts_from_another_rates_weights(trained, tmp_path):
    run_dir, summary = trained
    codec_file = run_dir / "codec-test.safetensors"
    source, _ = load_trained_codec(codec_file)
    carried = tmp_path / "carried-back"  # a run brought back from a GPU without its checkpoint
    carried.mkdir()
    for name in ("config.json", "log.jsonl", codec_file.name):
        shutil.copy(run_dir / name, carried / name)
    # a run directory, an exported codec file, or a run directory that kept only its export
    for init in (run_dir, codec_file, carried):
        out = tmp_path / ("out-" + init.name)
        cfg = tiny(lmbda=0.0035, quality=2, steps=1, lr=0.0, aux_lr=0.0, init_from=str(init))
        train_codec(cfg, out, threads=2, export=True)
        tuned, record = load_trained_codec(out / "codec-test.safetensors")
        assert record["init_from"] == str(init)
        if init != codec_file:  # the card adds the steps of the run it started from
            from percept.training.publish import publish_codec

            card = publish_codec(out, "tuned", folder=tmp_path / "zoo")["card"]
            assert card["steps_this_run"] == 1
            assert card["steps"] == 1 + summary["step"]
            assert card["lineage"][0]["run"] == str(init)
        # lr 0: the weights are exactly those it started from
        for key, value in source.state_dict().items():
            if not key.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
                assert torch.equal(tuned.state_dict()[key], value), key
    with pytest.raises(PerceptError, match="N=12 M=16"):
        train_codec(tiny(N=8, M=12, init_from=str(codec_file)), tmp_path / "other", threads=2)
    with pytest.raises(PerceptError, match="no such run directory"):
        train_codec(tiny(init_from=str(tmp_path / "missing")), tmp_path / "none", threads=2)
    (carried / codec_file.name).unlink()
    with pytest.raises(PerceptError, match="neither checkpoint.pt nor an exported codec"):
        train_codec(tiny(init_from=str(carried)), tmp_path / "none2", threads=2)


def test_publish_codec_ships_a_float16_verified_file(trained, tmp_path):
    from percept.hub import zoo
    from percept.training.publish import publish_codec

    run_dir, _ = trained
    entry = publish_codec(run_dir, "codec-test-q3", folder=tmp_path)
    shipped = tmp_path / "codec-test-q3.safetensors"
    registry = tmp_path / "zoo.json"
    assert entry["kind"] == "codec" and entry["sha256"] == zoo.sha256_file(shipped)
    from safetensors import safe_open

    source, _ = load_trained_codec(run_dir / "codec-test.safetensors")
    params = {name for name, _ in source.named_parameters()}
    with safe_open(str(shipped), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    assert all(tensors[k].dtype == torch.float16 for k in params)
    # buffers keep their exact values: a rounded scale table would change the entropy coder
    scale_table = source.gaussian_conditional.scale_table
    assert torch.equal(tensors["gaussian_conditional.scale_table"], scale_table)
    assert zoo.weights_path("codec-test-q3", registry=registry) == shipped
    card = zoo.read_registry(registry)["codec-test-q3"]["card"]
    assert card["storage_dtype"] == "float16" and card["history"]["loss"]
    assert card["kind"] == "codec" and card["name"] == "codec-test-q3"  # the book's cards need both
    assert card["train_seconds"] > 0
    model, record = load_trained_codec(shipped)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert roundtrip_is_exact(model, load_trained_codec(shipped)[0], x)
    assert record["lmbda"] == 0.0067
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 1
    shipped.write_bytes(bytes(data))
    with pytest.raises(PerceptError, match="corrupt or was replaced"):
        zoo.weights_path("codec-test-q3", registry=registry)
    with pytest.raises(PerceptError, match="no zoo entry"):
        zoo.weights_path("codec-missing", registry=registry)


def test_cli_publish_ships_a_codec_run(trained, tmp_path, capsys):
    from percept.cli import main as percept
    from percept.hub.zoo import read_registry

    run_dir, _ = trained
    assert percept(["publish", str(run_dir), "--folder", str(tmp_path)]) == 0
    assert "published codec-test" in capsys.readouterr().out
    assert read_registry(tmp_path / "zoo.json")["codec-test"]["kind"] == "codec"
    assert percept(["publish", str(tmp_path), "--folder", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err
