"""Training run directories as a storage format: `config.json`, `log.jsonl` and `checkpoint.pt`.

The training layer writes runs; everything may read them. A checkpoint is a `torch.save` dict of
tensors and plain values, read with `weights_only=True`. Its `ema` holds the weights a run ships.
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


def is_run_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CHECKPOINT).is_file()


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise PerceptError(
            f"{run_dir} holds no {CHECKPOINT}: start a run there first (without --resume)"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


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
        checkpoint["unet"],
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
