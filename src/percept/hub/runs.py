"""Training run directories as a storage format: `config.json`, `log.jsonl` and `checkpoint.pt`.

The training layer writes runs; everything may read them. A checkpoint is a `torch.save` dict of
tensors and plain values, read with `weights_only=True`, with one set of keys for every kind of run
(`percept.training.loop` writes it): format, kind, config, step, train_seconds, heldout (the last
held-out record or None), model, ema (kinds with an EMA: the weights a run ships), optimizer,
modules and optimizers (further ones by name: a distillation's "target", the aux stage's "disc",
the codec's "aux" optimizer), generator, torch_rng, cuda_rng (CUDA runs) and extra (the kind's
plain values: a distillation's "unet", "teacher_weights" and "init_from", a codec's "data").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from percept.errors import PerceptError
from percept.models.build import build_denoiser
from percept.models.lowrank import merge_in_place

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CHECKPOINT_FORMAT = 2


def is_run_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CHECKPOINT).is_file()


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise PerceptError(
            f"{run_dir} holds no {CHECKPOINT}: start a run there first (without --resume)"
        )
    return upgrade_checkpoint(torch.load(path, map_location="cpu", weights_only=True))


def upgrade_checkpoint(ck: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in the current format. Runs written before the one training loop (no "format"
    key) used two conventions, prior and distillation runs `optimizer`/`generator`, codec and
    paper-2 runs `opt`/`gen` (and `aux` for the aux encoder's weights); they are migrated on read,
    so that every existing run still resumes, exports and publishes."""
    if "format" in ck:
        return ck
    cfg = ck["config"]
    if "architecture" in cfg:
        kind = "codec"
    elif "aux_run" in cfg:
        kind = "fusion"
    elif "aux" in ck:
        kind = "aux-encoder"
    else:
        kind = "cm" if "teacher" in cfg else "prior"
    new = {
        "format": CHECKPOINT_FORMAT, "kind": kind, "config": cfg, "step": int(ck["step"]),
        "train_seconds": float(ck.get("train_seconds", 0.0)), "heldout": ck.get("last_val") or None,
        "model": ck["aux"] if kind == "aux-encoder" else ck["model"],
        "optimizer": ck["optimizer"] if "optimizer" in ck else ck["opt"],
        "modules": {k: ck[k] for k in ("target", "disc") if k in ck},
        "optimizers": {n: ck[k] for n, k in (("aux", "aux_opt"), ("disc", "disc_opt")) if k in ck},
        "generator": ck["generator"] if "generator" in ck else ck["gen"],
        "torch_rng": ck["torch_rng"],
        "extra": {k: ck[k] for k in ("unet", "teacher_weights", "init_from", "data") if k in ck},
    }  # fmt: skip
    for key in ("ema", "cuda_rng"):
        if key in ck:
            new[key] = ck[key]
    return new


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_kind(checkpoint: dict) -> str:
    """'cm' for a consistency distillation run (its config names a teacher), else 'prior'."""
    return "cm" if "teacher" in checkpoint["config"] else "prior"


def student_skeleton(checkpoint: dict) -> nn.Module:
    """An untrained denoiser shaped like a run's checkpoint (low-rank parametrizations included)."""
    cfg = checkpoint["config"]
    if run_kind(checkpoint) == "prior":
        return build_denoiser("prior", cfg["unet"])
    return build_denoiser(
        "cm",
        checkpoint["extra"]["unet"],
        sigma_min=cfg["sigma_min"],
        sigma_max=cfg.get("sigma_max"),
        lowrank_rank=cfg.get("lowrank_rank"),
    )


def load_run_denoiser(run_dir: str | Path) -> nn.Module:
    """The EMA denoiser of a prior or distillation run's latest checkpoint (eval mode, on CPU)."""
    checkpoint = read_checkpoint(run_dir)
    model = student_skeleton(checkpoint)
    model.load_state_dict(checkpoint["ema"])
    merge_in_place(model)
    return model.eval().requires_grad_(False)
