"""The one training loop: checkpoints written in the formats before it still resume exactly."""

from __future__ import annotations

import pytest
import torch

from percept.hub import runs
from percept.training.prior import train_prior
from tests.test_training import tiny_config

# bit-identical resumes need one reduction order: every test on one thread (conftest's one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_checkpoint_in_the_former_prior_format_resumes_exactly(tmp_path):
    cfg = tiny_config(steps=6, val_every=3)
    train_prior(cfg, tmp_path / "straight", progress=False, export=False)
    split = tmp_path / "split"
    train_prior(cfg, split, max_steps=3, progress=False, export=False)
    ck = runs.read_checkpoint(split)
    old = {  # the keys prior runs wrote before the one loop
        "config": ck["config"], "step": ck["step"], "train_seconds": ck["train_seconds"],
        "model": ck["model"], "ema": ck["ema"], "optimizer": ck["optimizer"],
        "generator": ck["generator"], "torch_rng": ck["torch_rng"],
    }  # fmt: skip
    torch.save(old, split / runs.CHECKPOINT)
    assert runs.read_checkpoint(split)["kind"] == "prior"
    train_prior(cfg, split, resume=True, progress=False, export=False)
    a, b = runs.read_checkpoint(tmp_path / "straight"), runs.read_checkpoint(split)
    assert b["format"] == runs.CHECKPOINT_FORMAT and a["step"] == b["step"] == 6
    for key in ("model", "ema"):
        assert all(torch.equal(v, b[key][k]) for k, v in a[key].items())


def test_former_codec_and_stage_keys_are_upgraded():
    t = torch.zeros(1)
    codec = {"config": {"architecture": "x"}, "step": 2, "model": {}, "opt": {"s": t},
             "aux_opt": {"s": t}, "gen": t, "torch_rng": t, "data": "abc", "last_val": {}}  # fmt: skip
    new = runs.upgrade_checkpoint(codec)
    assert new["kind"] == "codec" and new["optimizers"]["aux"] == {"s": t}
    assert new["generator"] is t and new["extra"]["data"] == "abc" and new["heldout"] is None
    aux = {"config": {"disc_width": 8}, "step": 2, "aux": {"w": t}, "disc": {}, "opt": {},
           "disc_opt": {}, "generator": t, "torch_rng": t}  # fmt: skip
    new = runs.upgrade_checkpoint(aux)
    assert new["kind"] == "aux-encoder" and new["model"] == {"w": t} and "disc" in new["modules"]
