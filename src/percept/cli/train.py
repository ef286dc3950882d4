"""`percept train KIND ...`: KIND is prior, distill, codec, pack or pack-photos (each module owns its
options)."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

from percept.errors import PerceptError

KINDS = {
    "prior": "percept.training.prior",
    "distill": "percept.training.distill",
    "codec": "percept.training.codec",
    "aux-encoder": "percept.training.fusion",
    "fusion": "percept.training.fusion",
    "pack": "percept.training.crops",
    "pack-photos": "percept.training.crops:photos_main",
}


def _prior_main(argv: list[str]) -> int:
    from percept.training.prior import PriorTrainConfig, train_prior
    from percept.training.runtime import read_config

    p = argparse.ArgumentParser(
        prog="percept train prior", description="Train the EDM diffusion prior."
    )
    p.add_argument(
        "--config", required=True, help="packaged config name (e.g. prior-s) or a .json path"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="run directory (checkpoint, log, export)"
    )
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out exactly")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop (with a checkpoint) after M minutes"
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop when the run has done N steps in total"
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="start a new run from published weights (zoo name or .safetensors), e.g. percept-prior-s",
    )
    p.add_argument(
        "--cooldown",
        type=int,
        default=None,
        metavar="N",
        help="decay the learning rate linearly to zero over the next N steps, then stop",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PriorTrainConfig.from_dict(read_config(args.config, "prior-"))
    summary = train_prior(
        cfg,
        args.out,
        resume=args.resume,
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        device=args.device,
        init_from=args.init_from,
        cooldown=args.cooldown,
    )
    print(json.dumps(summary))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help") or argv[1] not in KINDS:
        print(
            "usage: percept train {prior,distill,codec,aux-encoder,fusion,pack,pack-photos} [OPTIONS]  (percept train KIND --help)"
        )
        if len(argv) >= 2 and argv[1] not in ("-h", "--help"):
            raise PerceptError(f"unknown kind {argv[1]!r}: choose from {', '.join(KINDS)}")
        return 0 if len(argv) >= 2 else 2
    kind = argv[1]
    if kind == "prior":
        return _prior_main(argv[2:])
    module, _, func = KINDS[kind].partition(":")
    return int(getattr(importlib.import_module(module), func or "main")(argv) or 0)
