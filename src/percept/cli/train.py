"""`percept train KIND ...`: KIND is prior, distill, codec, aux-encoder, fusion, pack or pack-photos.

The options of every kind are parsed here; the training library (`percept.training`) takes typed
configs. Only the chosen kind's module is imported (start-up time of `percept`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from percept.core import distributed
from percept.errors import PerceptError
from percept.training import codec as codec_training
from percept.training import crops
from percept.training import fusion as fusion_training
from percept.training.codec import packaged_configs, train_codec
from percept.training.distill import DistillConfig, train_distill
from percept.training.fusion import AuxConfig, FusionConfig, train_aux, train_fusion
from percept.training.prior import PriorTrainConfig, train_prior
from percept.training.runtime import parse_overrides, read_config

KINDS = ("prior", "distill", "codec", "aux-encoder", "fusion", "pack", "pack-photos")


def _report(summary: dict, indent: int | None = None) -> None:
    """The run's summary on stdout, once (by rank 0 under torchrun)."""
    if distributed.from_env().main:
        print(json.dumps(summary, indent=indent))


def _run_options(p: argparse.ArgumentParser) -> None:
    """What every training command takes: --out, --resume, limits, threads, device."""
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoint, log, export)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--max-steps", type=int, help="stop when the run has done N steps in total")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def _distill_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="percept train distill", description="Consistency distillation of the prior."
    )
    p.add_argument(
        "--teacher",
        help="teacher: a prior run directory, zoo name or .safetensors (overrides the config's)",
    )
    p.add_argument("--config", required=True, help="packaged config name (e.g. cm-s) or a .json path")
    _run_options(p)
    p.add_argument(
        "--init-from",
        help="start a new run from a published consistency model (zoo name or .safetensors), e.g. "
        "percept-cm-s after its prior was republished",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = read_config(args.config, "cm-")
    if args.teacher:
        raw["teacher"] = str(args.teacher)
    summary = train_distill(
        DistillConfig.from_dict(raw), args.out, resume=args.resume, max_minutes=args.max_minutes,
        max_steps=args.max_steps, init_from=args.init_from, device=args.device,
    )  # fmt: skip
    _report(summary)
    return 0


def _codec_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="percept train codec", description="Train the project's learned codec at one rate."
    )
    p.add_argument(
        "--config", help=f"packaged config name or JSON path ({', '.join(packaged_configs())})"
    )
    p.add_argument("--out", type=Path, help="run directory (checkpoint, log, exported .safetensors)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this wall time")
    p.add_argument("--max-steps", type=int, help="stop at this global step; the schedule is unchanged")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config key")
    p.add_argument("--export", action="store_true", help="export the codec file even if unfinished")
    p.add_argument("--list-configs", action="store_true", help="list packaged configs and exit")
    args = p.parse_args(argv)
    if args.list_configs:
        print("\n".join(packaged_configs()))
        return 0
    if not args.config or not args.out:
        p.error("--config and --out are required")
    summary = train_codec(
        codec_training.load_config(args.config, parse_overrides(args.set)), args.out, resume=args.resume,
        max_minutes=args.max_minutes, max_steps=args.max_steps, threads=args.threads,
        device=args.device, export=args.export,
    )  # fmt: skip
    _report(summary, indent=2)
    return 0


def _stage_main(kind: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=f"percept train {kind}", description="Train paper 2's stage (b) or (c)."
    )
    p.add_argument("--config", required=True, help="packaged config name or a .json path")
    _run_options(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a key")
    p.add_argument("--export", action="store_true", help="export the weights even if unfinished")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cls, run = (AuxConfig, train_aux) if kind == "aux-encoder" else (FusionConfig, train_fusion)
    summary = run(fusion_training.load_config(args.config, cls, parse_overrides(args.set)), args.out,
                  resume=args.resume, max_minutes=args.max_minutes, max_steps=args.max_steps,
                  device=args.device, export=args.export)  # fmt: skip
    _report(summary)
    return 0


def _prior_main(argv: list[str]) -> int:
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
    _report(summary)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help") or argv[1] not in KINDS:
        print(
            "usage: percept train {prior,distill,codec,aux-encoder,fusion,pack,pack-photos} [OPTIONS]  (percept train KIND --help)"
        )
        if len(argv) >= 2 and argv[1] not in ("-h", "--help"):
            raise PerceptError(f"unknown kind {argv[1]!r}: choose from {', '.join(KINDS)}")
        return 0 if len(argv) >= 2 else 2
    kind, rest = argv[1], argv[2:]
    try:  # under torchrun the kinds join the ranks' process group (`percept.training.loop.Run`)
        if kind == "prior":
            return _prior_main(rest)
        if kind == "distill":
            return _distill_main(rest)
        if kind == "codec":
            return _codec_main(rest)
        if kind in ("aux-encoder", "fusion"):
            return _stage_main(kind, rest)
    finally:
        distributed.shutdown()

    return crops.main(argv) if kind == "pack" else crops.photos_main(argv)
