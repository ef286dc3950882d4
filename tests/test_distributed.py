"""Past one machine: a training run on two ranks (torchrun, DDP, gloo) and an evaluation split into
shards, merged into the file a single process writes. Two CPU processes each; the torchrun tests
spend most of their time starting Python and torch twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from percept.core import distributed
from percept.errors import PerceptError
from percept.eval import harness
from percept.eval.results import load_results, save_results, strip_timings
from percept.hub import runs

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"channels": [8, 16], "blocks": [1, 1], "mid_blocks": 1, "emb_dim": 16, "groups": 4}
TINY_PRIOR = dict(
    name="test-tiny", unet=TINY_UNET, crop=32, batch_size=8, steps=40, lr=3e-3, warmup_steps=2,
    decay_start=1000, ema_decay=0.9, bf16=False, train_images=8, val_images=2, val_crop=32,
    log_every=1, val_every=20,
)  # fmt: skip
GRID = {"jpeg": [10, 40]}
EVAL = dict(crop="crop64", limit=3, swd_seeds=(0, 1), deep_metrics=(), progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 ARGS` (a free port of its own), one thread a rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*cmd, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_a_world_of_one_is_a_plain_process(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    world, device = distributed.init("cpu")
    assert world == distributed.World(0, 1, 0) and world.main and not world.active
    assert device == torch.device("cpu") and not torch.distributed.is_initialized()
    assert distributed.any_of(True, False) == (True, False)
    assert distributed.mean_of([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.rank_seed(5, 0) == 5 and distributed.rank_seed(5, 1) != 5
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(PerceptError, match="outside WORLD_SIZE"):
        distributed.from_env()


def test_prior_trains_on_two_ranks_with_one_writer_and_resumes_exactly(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_PRIOR))
    torchrun(str(ROOT / "tests" / "ddp_worker.py"), str(config), str(tmp_path))
    report = {
        p.stem: json.loads(p.read_text()) for p in sorted((tmp_path / "report").glob("*.json"))
    }
    assert len(report) == 6 and {r["world"] for r in report.values()} == {2}
    for session, steps in (("split-3", 3), ("split-6", 6), ("straight-6", 6)):
        a, b = report[f"{session}-rank0"], report[f"{session}-rank1"]
        assert a["step"] == b["step"] == steps
        # DDP: the same weights (and so the same EMA and held-out figures) on both ranks
        assert (a["model"], a["ema"], a["heldout"]) == (b["model"], b["ema"], b["heldout"])
    # a resume on two ranks continues each rank's draws: the split run is the straight one
    assert report["split-6-rank0"]["model"] == report["straight-6-rank0"]["model"]
    assert report["split-6-rank0"]["ema"] == report["straight-6-rank0"]["ema"]
    run = tmp_path / "split"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoint.pt", "config.json", "log.jsonl"]
    ck = runs.read_checkpoint(run)
    from percept.training.runtime import tensor_digest

    assert ck["step"] == 6 and tensor_digest(sorted(ck["model"].items())) == report["split-6-rank0"]["model"]
    assert len(ck["ranks"]) == 2 and torch.equal(ck["ranks"][0]["generator"], ck["generator"])
    assert not torch.equal(ck["ranks"][0]["generator"], ck["ranks"][1]["generator"])  # own crops
    log = runs.read_log(run)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]  # one writer, no repeats
    assert [r["step"] for r in log if "command" in r] == [0, 3]
    assert [r["step"] for r in log if "val_psnr" in r] == [3, 6]


def test_batch_size_splits_over_the_ranks():
    from percept.training.loop import Task

    task = Task.__new__(Task)
    task.world = distributed.World(1, 2, 1)
    assert task.local_batch(8) == 4
    with pytest.raises(PerceptError, match="does not split over 2 ranks"):
        task.local_batch(7)
    task.world = distributed.World()
    assert task.local_batch(7) == 7


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from percept.hub.zoo import save_weights
    from percept.models import EDMDenoiser, UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig.from_dict(TINY_UNET))
    card = {"kind": "prior", "arch": "unet-edm", "unet": TINY_UNET, "sigma_data": 0.5}
    path = tmp_path_factory.mktemp("prior") / "toy.safetensors"
    return str(save_weights(EDMDenoiser(net).net.state_dict(), card, path))


def test_shards_merge_into_the_single_process_file(tmp_path, tiny_prior, offline_deep_metrics):
    methods = ["decode", "enhance:medium:0.3"]
    options = {**EVAL, "prior": tiny_prior}
    single = harness.run("skimage", GRID, methods, out=tmp_path / "one" / "r.json", **options)
    out = tmp_path / "split" / "r.json"
    for i in (1, 0):  # any order, any process: every output depends on its image and cell only
        part = harness.run("skimage", GRID, methods, out=out, shard=(i, 2), **options)
        assert part["cells"] == [] and part["shard"] == {"index": i, "count": 2, "of": "r.json"}
    assert not out.exists() and harness.shard_path(out, 1, 2).name == "r.shard-1-of-2.json"
    assert len(load_results(harness.shard_path(out, 0, 2))["rows"]) == 2 * 2 * 2  # images 0, 2
    merged = harness.merge(out, progress=False)
    assert load_results(out) == json.loads(json.dumps(merged))
    assert strip_timings(merged) == strip_timings(single)  # config, rows in order, cells
    assert merged["name"] == single["name"] and merged["merged"]["shards"] == 2
    # the merged file is an ordinary run: running the whole grid on it finds nothing left to do
    seen = []
    again = harness.run("skimage", GRID, methods, out=out, on_image=lambda d, n: seen.append(n), **options)
    assert seen == [] and strip_timings(again) == strip_timings(single)


def test_merge_refuses_missing_unfinished_or_foreign_shards(tmp_path, offline_deep_metrics):
    out = tmp_path / "r.json"
    with pytest.raises(PerceptError, match="no shard files"):
        harness.merge(out, progress=False)
    harness.run("skimage", GRID, out=out, shard=(0, 2), **EVAL)
    with pytest.raises(PerceptError, match=r"shards 0\.\.1 of 2 once each; got 0/2"):
        harness.merge(out, progress=False)

    harness.run("skimage", GRID, out=out, shard=(1, 2), **EVAL)
    part = load_results(harness.shard_path(out, 1, 2))
    part["rows"] = part["rows"][:-1]  # as a shard killed mid-image leaves it
    save_results(harness.shard_path(out, 1, 2), part)
    with pytest.raises(PerceptError, match="has not finished image"):
        harness.merge(out, progress=False)
    other = tmp_path / "o.json"
    harness.run("skimage", {"jpeg": [20]}, out=other, shard=(1, 2), **EVAL)
    with pytest.raises(PerceptError, match="another config"):
        harness.merge(out, [harness.shard_path(out, 0, 2), harness.shard_path(other, 1, 2)], progress=False)
    with pytest.raises(PerceptError, match="bad shard"):
        harness.parse_shard("2/2")
    assert harness.parse_shard("1/4") == (1, 4)


def test_eval_under_torchrun_writes_the_single_process_file(tmp_path, offline_deep_metrics):
    out = tmp_path / "t.json"
    torchrun(
        "-m", "percept.cli", "eval", "--dataset", "skimage", "--crop", "crop64", "--limit", "3",
        "--codecs", "jpeg:10,40", "--swd-seeds", "0", "1", "--deep-metrics", "--no-progress",
        "--out", str(out),
    )  # fmt: skip
    single = harness.run("skimage", GRID, out=tmp_path / "one" / "t.json", **EVAL)
    assert strip_timings(load_results(out)) == strip_timings(single)
    assert harness.shard_path(out, 0, 2).is_file() and harness.shard_path(out, 1, 2).is_file()
