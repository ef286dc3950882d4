"""`percept eval`: codecs x qualities x methods over a dataset, into a resumable results file;
`percept eval summary FILE` prints one.

Across processes: `percept eval ... --shard I/N` evaluates every N-th image from the I-th into
OUT_STEM.shard-I-of-N.json and `percept eval merge --out OUT` joins the N shards into OUT, equal to
a single run's file; under `torchrun --nproc_per_node N` each rank runs its shard and rank 0 merges
when all have finished."""

from __future__ import annotations

import argparse
import sys
import time

from percept.core import distributed
from percept.core.images import check_output_path
from percept.errors import PerceptError
from percept.eval.harness import merge, parse_codecs, parse_shard, run, shard_path
from percept.eval.results import DEEP_METRICS, format_summary, load_results


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse errors are user errors: exit 2 via PerceptError
        raise PerceptError(message)


_OPTIONS: list[tuple[str, dict]] = [
    ("--dataset", {"default": "kodak", "help": "kodak, imagenet-sample[:val], skimage, a folder"}),
    ("--crop", {"help": "centerN (scale + crop, paper 1) or cropN"}),
    ("--limit", {"type": int, "help": "only the first N images (a larger N extends a run)"}),
    ("--codecs", {"nargs": "+", "required": True, "help": "NAME:Q1,Q2,... e.g. jpeg:5,15,30"}),
    (
        "--methods",
        {
            "nargs": "+",
            "default": ["decode"],
            "help": "decode | enhance:SETTING:SIGMA (e.g. enhance:medium:auto, enhance:medium@20:0.3, enhance:fast+consistency:auto) | interp:A | fuse:TAU",
        },
    ),
    ("--prior", {"help": "prior for enhance methods (zoo name, file, diffusers folder)"}),
    ("--consistency-model", {"help": "runs the fast presets' methods, e.g. percept-cm-s"}),
    ("--sigmas", {"nargs": "+", "default": [], "help": "adds enhance:PRESET:SIGMA for each"}),
    ("--preset", {"default": "medium", "help": "the preset used with --sigmas"}),
    ("--seed", {"type": int, "default": 0, "help": "seed of the enhancer's noise"}),
    ("--swd-seeds", {"type": int, "nargs": "+", "default": [0, 1, 2, 3]}),
    ("--deep-metrics", {"nargs": "*", "default": list(DEEP_METRICS), "help": "lpips fid, or none"}),
    ("--out", {"required": True, "help": "results JSON (output PNGs go to OUT_STEM.images/)"}),
    ("--name", {}),
    ("--description", {"default": ""}),
    ("--overwrite", {"action": "store_true", "help": "discard a previous run in --out"}),
    (
        "--shard",
        {"help": "I/N: evaluate every N-th image from the I-th into OUT_STEM.shard-I-of-N.json "
                 "(join the N shards with percept eval merge --out OUT)"},
    ),
    ("--no-progress", {"action": "store_true"}),
]
_RUN_KEYS = (
    "crop",
    "limit",
    "prior",
    "consistency_model",
    "seed",
    "swd_seeds",
    "deep_metrics",
    "name",
    "description",
)


def main(argv: list[str]) -> int:
    """`percept eval [options]` runs a grid; `percept eval summary FILE [--reference CODEC]` prints one."""
    args = list(argv[1:])
    if args[:1] == ["summary"]:
        p = _Parser(prog="percept eval summary")
        p.add_argument("file")
        p.add_argument("--reference", default=None)
        a = p.parse_args(args[1:])
        results = load_results(a.file)
        print(format_summary(results, a.reference))
        return 0
    if args[:1] == ["merge"]:
        p = _Parser(prog="percept eval merge", description="join the shard files of a run")
        p.add_argument("shards", nargs="*", help="shard files (default: OUT_STEM.shard-*-of-*.json)")
        p.add_argument("--out", required=True, help="the merged results JSON")
        p.add_argument("--no-progress", action="store_true")
        a = p.parse_args(args[1:])
        out = check_output_path(a.out)
        results = merge(out, a.shards or None, progress=not a.no_progress)
        print(format_summary(results))
        print(f"\nwrote {out} ({len(results['rows'])} rows)", file=sys.stderr)
        return 0
    parser = _Parser(prog="percept eval", description=__doc__.split("\n")[0])
    for flag, kwargs in _OPTIONS:
        parser.add_argument(flag, **kwargs)
    a = parser.parse_args(args)
    out = check_output_path(a.out)  # one line for a folder, a missing folder, a too-long name
    methods = list(a.methods) + [f"enhance:{a.preset}:{s}" for s in a.sigmas]
    shard = parse_shard(a.shard) if a.shard else None
    world = distributed.from_env()
    if shard is None and world.active:  # under torchrun: this rank's shard, then rank 0 merges
        distributed.init("cpu", timeout_minutes=7 * 24 * 60)  # the barrier waits for the slowest
        shard = (world.rank, world.size)
    start = time.perf_counter()
    try:
        results = run(
            a.dataset, parse_codecs(a.codecs), methods, out=out, overwrite=a.overwrite,
            progress=not a.no_progress, shard=shard, **{k: getattr(a, k) for k in _RUN_KEYS},
        )  # fmt: skip
        if world.active and not a.shard:
            distributed.barrier()
            if not world.main:
                return 0
            results = merge(out, [shard_path(out, i, world.size) for i in range(world.size)],
                            progress=not a.no_progress)  # fmt: skip
    finally:
        distributed.shutdown()
    if a.shard:
        target = shard_path(out, *shard)
        print(f"wrote {target} ({len(results['rows'])} rows) in {time.perf_counter() - start:.1f} s;"
              f" when all {shard[1]} shards are done: percept eval merge --out {out}", file=sys.stderr)  # fmt: skip
        return 0
    print(format_summary(results))
    print(
        f"\nwrote {out} ({len(results['rows'])} rows) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0
