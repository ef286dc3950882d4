"""The evaluation harness: codecs x qualities x methods over a dataset, written to a results file.

``run`` encodes every image with every (codec, quality) through the real container (bpp counts the
whole file, header included), decodes it, applies each method ("decode"; "enhance:PRESET:SIGMA",
the paper's eq. 9-11 with a prior; "interp:ALPHA", eq. 12's blend of the decode and the first
enhanced method; "fuse:TAU", paper 2's latent fusion module of the codec's rate at tau) and
records per-image metrics. After all images it computes set-level metrics per
cell: SWD against the originals, and LPIPS/FID when their weights exist (else recorded as
unavailable with the reason, never a number). The JSON is rewritten atomically after each image and
every output is kept as a PNG beside it, so a killed run resumes where it stopped and gives the same
rows as an uninterrupted one (timings aside).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from percept.codecs.container import bpp, decode_file, encode_image
from percept.core.images import load_image, quantize, save_png
from percept.core.provenance import environment
from percept.enhancer.calibrate import model_sha256
from percept.errors import PerceptError
from percept.eval.results import (
    DEEP_METRICS,
    SCHEMA,
    format_summary,
    image_metrics,
    load_results,
    save_results,
    set_metrics,
)
from percept.hub.datasets import load_dataset


def parse_codecs(items: Sequence[str]) -> dict[str, list[int]]:
    """["jpeg:5,15", "webp:30"] -> {"jpeg": [5, 15], "webp": [30]}."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, _, qs = item.partition(":")
        try:
            qualities = [int(q) for q in qs.split(",") if q.strip()]
        except ValueError:
            qualities = []
        if not name or not qualities:
            raise PerceptError(f"bad codec spec {item!r}: use NAME:Q1,Q2,... e.g. jpeg:5,15,30,50")
        out.setdefault(name, []).extend(q for q in qualities if q not in out.get(name, []))
    if not out:
        raise PerceptError("no codecs given: use e.g. --codecs jpeg:5,15 webp:5,15")
    return out


def parse_method(method: str) -> tuple:
    """ "decode" | "enhance:PRESET:SIGMA[:consistent]" | "interp:ALPHA" | "fuse:TAU" -> a tuple.

    An enhance method parses to ("enhance", preset, sigma, consistent): with the ":consistent"
    suffix its output is projected into the JPEG file's quantisation cells
    (`percept.codecs.jpeg_consistency`; JPEG codecs only)."""
    parts = method.split(":")
    try:
        if parts == ["decode"]:
            return ("decode",)
        if parts[0] == "enhance" and (
            len(parts) == 3 or (len(parts) == 4 and parts[3] == "consistent")
        ):
            sigma = parts[2] if parts[2] == "auto" else float(parts[2])
            return ("enhance", parts[1], sigma, len(parts) == 4)
        if parts[0] == "interp" and len(parts) == 2 and 0 <= float(parts[1]) <= 1:
            return ("interp", float(parts[1]))
        if parts[0] == "fuse" and len(parts) == 2 and 0 <= float(parts[1]) <= 1:
            return ("fuse", float(parts[1]))
    except ValueError:
        pass
    raise PerceptError(
        f"bad method {method!r}: use decode, enhance:PRESET:SIGMA[:consistent] (SIGMA a number or "
        "auto), interp:ALPHA (0..1) or fuse:TAU (0..1)"
    )


def _seed_for(seed: int, *key) -> torch.Generator:
    """A generator that depends only on the cell and image, so resumed runs draw the same noise."""
    return torch.Generator().manual_seed(
        seed * 1_000_003 + zlib.crc32("|".join(map(str, key)).encode())
    )


def _cache_dir(out: Path) -> Path:
    return out.parent / f"{out.stem}.images"


def _png_path(cache: Path, image: str, codec: str, quality: int, method: str) -> Path:
    return cache / f"{codec}-q{quality}" / method.replace(":", "_") / f"{image}.png"


def output_images(out, results: dict, codec: str, quality: int, method: str) -> list[torch.Tensor]:
    """The kept outputs of one cell of a results file, in image order; method "original" gives the
    dataset's images themselves (loaded again by the run's config)."""
    names = list(dict.fromkeys(r["image"] for r in results["rows"]))
    if method == "original":
        config = results["config"]
        found = {
            item.name: item.image
            for item in load_dataset(config["dataset"], crop=config["crop"], limit=config["limit"])
        }
        return [found[n] for n in names]
    cache = _cache_dir(Path(out))
    return [load_image(_png_path(cache, n, codec, quality, method))[0] for n in names]


def _uses_cm(parsed: tuple) -> bool:
    """Whether a parsed method runs the consistency sampler (the fast presets)."""
    from percept.enhancer.presets import get_preset

    return parsed[0] == "enhance" and get_preset(parsed[1]).sampler == "consistency"


def _outputs(x_hat, t_dec, parsed, methods, models, config, image, codec, quality, payload):
    """Each method's output image and its wall time (decode + whatever the method adds).

    models: (prior, consistency model or None, {(codec, quality): fusion module}); a fast preset
    runs on the consistency model. payload: the codec's bitstream (a consistent method projects
    into its JPEG cells; a fuse method decodes it again through the fusion module, timed whole)."""
    from percept.codecs.jpeg_consistency import projector_for
    from percept.enhancer.interpolate import interpolate
    from percept.enhancer.pipeline import enhance_image
    from percept.fusion.decode import decode_payload

    outs: dict[str, tuple[torch.Tensor, float]] = {}
    first_enhanced = next((m for m, p in zip(methods, parsed) if p[0] == "enhance"), None)
    for method, p in sorted(zip(methods, parsed), key=lambda mp: mp[1][0] == "interp"):
        start = time.perf_counter()
        if p[0] == "decode":
            y, extra = x_hat, 0.0
        elif p[0] == "fuse":
            generator = _seed_for(config["seed"], image, codec, quality, method)
            y = decode_payload(models[2][(codec, quality)], payload, p[1], generator)
            extra = time.perf_counter() - start - t_dec  # the fused decode replaces the plain one
        elif p[0] == "enhance":
            cm = _uses_cm(p) and models[1] is not None
            y = enhance_image(
                x_hat,
                models[1] if cm else models[0],
                p[2],
                p[1],
                generator=_seed_for(config["seed"], image, codec, quality, method),
                codec=codec,
                quality=quality,
                prior_name=config["consistency_model"] if cm else config["prior"],
                project=projector_for(codec, payload) if p[3] else None,
            )
            extra = time.perf_counter() - start
        else:
            enhanced, t_enh = outs[first_enhanced]
            y = interpolate(x_hat, enhanced, p[1])
            extra = t_enh - t_dec + time.perf_counter() - start
        outs[method] = (quantize(y.float()), t_dec + extra)
    return outs


def _cells(images, config, cache, deep_metrics, progress) -> list[dict]:
    """Set-level metrics per (codec, quality, method), from the cached PNGs."""
    references = [img.image for img in images]
    keys = [(c, q, m) for c, qs in config["codecs"].items() for q in qs for m in config["methods"]]
    cells, deep_status = [], {}
    for codec, quality, method in tqdm(keys, desc="set metrics", disable=not progress):
        tests = [load_image(_png_path(cache, i.name, codec, quality, method))[0] for i in images]
        cell = {"codec": codec, "quality": quality, "method": method}
        cell.update(set_metrics(references, tests, config["swd_seeds"], deep_metrics, deep_status))
        cells.append(cell)
    return cells


def run(
    dataset: str,
    codecs: dict[str, list[int]],
    methods: Sequence[str] = ("decode",),
    *,
    out: str | Path,
    crop: str | None = None,
    limit: int | None = None,
    prior: str | None = None,
    consistency_model: str | None = None,
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    deep_metrics: Sequence[str] = DEEP_METRICS,
    name: str | None = None,
    description: str = "",
    overwrite: bool = False,
    progress: bool = True,
    on_image: Callable[[int, str], None] | None = None,
) -> dict:
    """Evaluate ``codecs`` ({name: [qualities]}) x ``methods`` on ``dataset``; write and return results.

    Resumes from ``out`` when it holds a run with the same config (``limit`` may differ: a larger
    one extends the run); a different config raises ``PerceptError`` unless ``overwrite``.
    ``on_image(done, name)`` is called after each image is saved (tests use it to interrupt a run).
    ``consistency_model`` (a zoo name or file) runs the methods of the fast presets; without it they
    run on ``prior``, which must then be a consistency model itself. Sigma "auto" looks up the
    calibration of the model that runs the method.
    """
    from percept.codecs import get_codec

    out = Path(out)
    parsed = [parse_method(m) for m in methods]
    unknown = set(deep_metrics) - set(DEEP_METRICS)
    if unknown:
        raise PerceptError(f"unknown deep metrics {sorted(unknown)}: choose from {DEEP_METRICS}")
    if any(p[0] == "enhance" for p in parsed) and not prior:
        raise PerceptError(
            "enhance methods need --prior NAME_OR_PATH (a zoo name, file or diffusers folder)"
        )
    if consistency_model and not any(_uses_cm(p) for p in parsed):
        raise PerceptError(
            "--consistency-model runs the fast presets' methods: add one (e.g. enhance:fast:auto)"
        )
    if any(p[0] == "interp" for p in parsed) and not any(p[0] == "enhance" for p in parsed):
        raise PerceptError("interp:ALPHA blends the decode with an enhance method: add one")
    others = sorted(c for c in codecs if c != "jpeg")
    if any(p[0] == "enhance" and p[3] for p in parsed) and others:
        raise PerceptError(
            "enhance:...:consistent projects into a JPEG file's quantisation cells; "
            f"{', '.join(others)} has none: evaluate it in a separate run"
        )
    fusion_names = {}
    if any(p[0] == "fuse" for p in parsed):
        from percept.fusion.decode import fusion_name_for

        fusion_names = {(c, q): fusion_name_for(c, q) for c, qs in codecs.items() for q in qs}
    coders = {(c, q): get_codec(c, q) for c, qs in codecs.items() for q in qs}  # fail before work
    config = {
        "dataset": dataset,
        "crop": crop,
        "limit": limit,
        "codecs": {c: list(qs) for c, qs in codecs.items()},
        "methods": list(methods),
        "prior": prior,
        "prior_sha256": model_sha256(prior) if prior else None,
        "consistency_model": consistency_model,
        "consistency_model_sha256": model_sha256(consistency_model) if consistency_model else None,
        "seed": seed,
        "swd_seeds": list(swd_seeds),
        "deep_metrics": list(deep_metrics),
    }
    if fusion_names:  # only then, so that results files without fuse methods keep their config
        config["fusion"] = {f"{c}:{q}": n for (c, q), n in fusion_names.items()}
        config["fusion_sha256"] = {n: model_sha256(n) for n in sorted(set(fusion_names.values()))}
    cache = _cache_dir(out)
    done: dict[str, list[dict]] = {}
    if out.exists() and not overwrite:
        old = load_results(out)
        diff = sorted(k for k in config if k != "limit" and old["config"].get(k) != config[k])
        if diff:
            raise PerceptError(
                f"{out} holds a run with a different config ({', '.join(diff)}): use another --out "
                "or --overwrite to start again"
            )
        for row in old["rows"]:
            done.setdefault(row["image"], []).append(row)
    elif overwrite and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    images = load_dataset(dataset, crop=crop, limit=limit)
    beyond = set(done) - {item.name for item in images}
    if beyond:  # a smaller limit would silently drop finished images from the file
        raise PerceptError(
            f"{out} has results for {len(beyond)} images beyond --limit {limit}: raise the limit, "
            "use another --out or --overwrite"
        )
    models = (None, None, {})
    if prior:
        from percept.enhancer.pipeline import load_prior

        models = (
            load_prior(prior),
            load_prior(consistency_model) if consistency_model else None,
            {},
        )
    if fusion_names:
        from percept.fusion.module import load_fusion

        models[2].update({key: load_fusion(name) for key, name in fusion_names.items()})
    results = {
        "schema": SCHEMA,
        "name": name or out.stem,
        "description": description or f"{', '.join(codecs)} on {dataset}",
        "environment": environment(),
        "config": config,
        "unavailable": {},
        "rows": [],
        "cells": [],
    }
    per_image = len(coders) * len(methods)

    def flush() -> None:
        results["rows"] = [r for img in images for r in done.get(img.name, [])]
        save_results(out, results)

    for index, item in enumerate(tqdm(images, desc="images", disable=not progress)):
        rows = done.get(item.name, [])
        pngs = all(
            _png_path(cache, item.name, r["codec"], r["quality"], r["method"]).is_file()
            for r in rows
        )
        if len(rows) == per_image and pngs:
            continue
        rows = []
        for (codec, quality), coder in coders.items():
            data = encode_image(item.image, coder)
            start = time.perf_counter()
            x_hat, record = decode_file(data)
            t_dec = time.perf_counter() - start
            outs = _outputs(
                x_hat, t_dec, parsed, list(methods), models, config, item.name, codec, quality,
                record.payload,
            )  # fmt: skip
            for method in methods:
                y, seconds = outs[method]
                png = _png_path(cache, item.name, codec, quality, method)
                png.parent.mkdir(parents=True, exist_ok=True)
                save_png(y, png)
                row = {
                    "image": item.name,
                    "codec": codec,
                    "quality": quality,
                    "method": method,
                    "bytes": len(data),
                    "bpp": bpp(data, *item.image.shape[-2:]),
                }
                row.update(image_metrics(item.image, y, results["unavailable"]))
                row["decode_s"] = seconds
                rows.append(row)
        done[item.name] = rows
        flush()
        if on_image is not None:
            on_image(index + 1, item.name)
    results["cells"] = _cells(images, config, cache, deep_metrics, progress)
    flush()
    return results


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
            "help": "decode | enhance:P:S[:consistent] | interp:A | fuse:TAU",
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
    parser = _Parser(prog="percept eval", description=__doc__.split("\n")[0])
    for flag, kwargs in _OPTIONS:
        parser.add_argument(flag, **kwargs)
    a = parser.parse_args(args)
    out = Path(a.out)
    if not out.parent.is_dir():
        raise PerceptError(f"cannot write {out}: directory {out.parent} does not exist")
    methods = list(a.methods) + [f"enhance:{a.preset}:{s}" for s in a.sigmas]
    start = time.perf_counter()
    results = run(
        a.dataset, parse_codecs(a.codecs), methods, out=out, overwrite=a.overwrite,
        progress=not a.no_progress, **{k: getattr(a, k) for k in _RUN_KEYS},
    )  # fmt: skip
    print(format_summary(results))
    print(
        f"\nwrote {out} ({len(results['rows'])} rows) in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0
