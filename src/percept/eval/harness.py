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

A run splits over processes or machines sharing a folder: ``run(..., shard=(i, n))`` evaluates the
images at positions i, i + n, i + 2n, ... into ``shard_path(out, i, n)`` (no cells) and keeps their
outputs in ``out``'s image folder, and ``merge`` joins the n shard files into ``out``: rows in the
dataset's order, cells computed on all images' outputs as a single run computes them. Every output
depends only on its image, cell and the seed (``_seed_for``), not on the process or the order, so the
merged file equals a single process's run (`strip_timings`: config, rows and cells; the timings and
the environment differ).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from percept.codecs import get_codec
from percept.codecs.base import has_projector
from percept.codecs.container import bpp, decode_file, encode_image
from percept.codecs.jpeg_consistency import projector_for
from percept.core.images import load_image, quantize, save_png
from percept.core.provenance import environment
from percept.enhancer.interpolate import interpolate
from percept.enhancer.pipeline import Enhancer, check_sigma
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.table import model_sha256
from percept.errors import PerceptError
from percept.eval.results import (
    DEEP_METRICS,
    SCHEMA,
    image_metrics,
    load_results,
    save_results,
    set_metrics,
)
from percept.fusion.decode import decode_payload, fusion_name_for
from percept.fusion.module import load_fusion
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
    """ "decode" | "enhance:SETTING:SIGMA" | "interp:ALPHA" | "fuse:TAU" -> a tuple.

    SETTING is an `EnhancerConfig` key (`medium`, `medium@20`, `fast+consistency`, ...); an enhance
    method parses to ("enhance", config, sigma). A consistency setting projects its output into the
    JPEG file's quantisation cells (`percept.codecs.jpeg_consistency`; JPEG codecs only). The
    spelling "enhance:PRESET:SIGMA:consistent" of earlier results files means PRESET+consistency."""
    parts = method.split(":")
    try:
        if parts == ["decode"]:
            return ("decode",)
        if parts[0] == "enhance" and (
            len(parts) == 3 or (len(parts) == 4 and parts[3] == "consistent")
        ):
            config = EnhancerConfig.from_key(parts[1])
            if len(parts) == 4:
                config = replace(config, consistency=True)
            sigma = parts[2] if parts[2] == "auto" else check_sigma(float(parts[2]))
            return ("enhance", config, sigma)
        if parts[0] == "interp" and len(parts) == 2 and 0 <= float(parts[1]) <= 1:
            return ("interp", float(parts[1]))
        if parts[0] == "fuse" and len(parts) == 2 and 0 <= float(parts[1]) <= 1:
            return ("fuse", float(parts[1]))
    except ValueError:
        pass
    raise PerceptError(
        f"bad method {method!r}: use decode, enhance:SETTING:SIGMA (SETTING a preset such as "
        "medium, medium@20 or fast+consistency; SIGMA a number or auto), interp:ALPHA (0..1) or "
        "fuse:TAU (0..1)"
    )


def _seed_for(seed: int, *key) -> torch.Generator:
    """A generator that depends only on the cell and image, so resumed runs draw the same noise."""
    return torch.Generator().manual_seed(
        seed * 1_000_003 + zlib.crc32("|".join(map(str, key)).encode())
    )


def shard_path(out: str | Path, index: int, count: int) -> Path:
    """The results file of shard `index` of `count` of a run into `out`: OUT_STEM.shard-I-of-N.json."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


def parse_shard(text: str) -> tuple[int, int]:
    """ "I/N" (0 <= I < N) -> (I, N)."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise PerceptError(f"bad shard {text!r}: use I/N with 0 <= I < N, e.g. 0/4")
    return i, n


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
    return parsed[0] == "enhance" and parsed[1].uses_consistency_model


def _outputs(x_hat, t_dec, parsed, methods, models, config, image, codec, quality, payload):
    """Each method's output image and its wall time (decode + whatever the method adds).

    models: (an Enhancer or None, {(codec, quality): fusion module}); the Enhancer runs each
    method's setting on the model it needs. payload: the codec's bitstream (a consistency setting
    projects into its JPEG cells; a fuse method decodes it again through the fusion module, timed
    whole)."""
    outs: dict[str, tuple[torch.Tensor, float]] = {}
    first_enhanced = next((m for m, p in zip(methods, parsed) if p[0] == "enhance"), None)
    for method, p in sorted(zip(methods, parsed), key=lambda mp: mp[1][0] == "interp"):
        start = time.perf_counter()
        if p[0] == "decode":
            y, extra = x_hat, 0.0
        elif p[0] == "fuse":
            generator = _seed_for(config["seed"], image, codec, quality, method)
            y = decode_payload(models[1][(codec, quality)], payload, p[1], generator)
            extra = time.perf_counter() - start - t_dec  # the fused decode replaces the plain one
        elif p[0] == "enhance":
            enhancer = models[0].with_config(p[1])
            sigma = enhancer.table_sigma(codec, quality) if p[2] == "auto" else p[2]
            y = enhancer(
                x_hat,
                sigma,
                generator=_seed_for(config["seed"], image, codec, quality, method),
                project=projector_for(codec, payload) if p[1].consistency else None,
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


@contextlib.contextmanager
def results_lock(out: Path):
    """Hold an exclusive lock on a results file for a whole run: a second `percept eval` on the
    same --out is refused with one line instead of both runs writing it and one run's rows being
    lost. The lock is an flock on a hidden file beside it (`.NAME.lock`, kept: removing it would
    let two runs lock different files); the kernel releases it when the process ends."""
    out.parent.mkdir(parents=True, exist_ok=True)  # the run writes its images beside it anyway
    lock = out.parent / f".{out.name}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise PerceptError(f"cannot lock {out}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PerceptError(
                f"another percept eval is writing {out}: wait for it to finish or use another --out"
            ) from None
        yield
    finally:
        os.close(fd)


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
    shard: tuple[int, int] | None = None,
) -> dict:
    """Evaluate ``codecs`` ({name: [qualities]}) x ``methods`` on ``dataset``; write and return results.

    Resumes from ``out`` when it holds a run with the same config (``limit`` may differ: a larger
    one extends the run); a different config raises ``PerceptError`` unless ``overwrite``.
    ``on_image(done, name)`` is called after each image is saved (tests use it to interrupt a run).
    ``consistency_model`` (a zoo name or file) runs the methods of the fast presets; without it they
    run on ``prior``, which must then be a consistency model itself. Sigma "auto" looks up the
    calibration of the model that runs the method.
    ``shard`` (i, n) evaluates only shard i of n into ``shard_path(out, i, n)``, without cells
    (module docstring; ``merge`` joins the shards).
    """
    out = Path(out)
    with results_lock(out if shard is None else shard_path(out, *shard)):
        return _run(
            dataset, codecs, methods, out=out, crop=crop, limit=limit, prior=prior,
            consistency_model=consistency_model, seed=seed, swd_seeds=swd_seeds,
            deep_metrics=deep_metrics, name=name, description=description, overwrite=overwrite,
            progress=progress, on_image=on_image, shard=shard,
        )  # fmt: skip


def _run(
    dataset: str,
    codecs: dict[str, list[int]],
    methods: Sequence[str],
    *,
    out: Path,
    crop: str | None,
    limit: int | None,
    prior: str | None,
    consistency_model: str | None,
    seed: int,
    swd_seeds: Sequence[int],
    deep_metrics: Sequence[str],
    name: str | None,
    description: str,
    overwrite: bool,
    progress: bool,
    on_image: Callable[[int, str], None] | None,
    shard: tuple[int, int] | None = None,
) -> dict:
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
    coders = {(c, q): get_codec(c, q) for c, qs in codecs.items() for q in qs}  # fail before work
    others = sorted({c for (c, _), coder in coders.items() if not has_projector(coder)})
    if any(p[0] == "enhance" and p[1].consistency for p in parsed) and others:
        raise PerceptError(
            "a consistency setting (enhance:PRESET+consistency:SIGMA) projects into a JPEG file's quantisation cells; "
            f"{', '.join(others)} has none: evaluate it in a separate run"
        )
    fusion_names = {}
    if any(p[0] == "fuse" for p in parsed):
        fusion_names = {(c, q): fusion_name_for(c, q) for c, qs in codecs.items() for q in qs}
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
    cache = _cache_dir(out)  # a shard's outputs go there too: the merge computes the cells on them
    target = out if shard is None else shard_path(out, *shard)
    images = load_dataset(dataset, crop=crop, limit=limit)
    if shard is not None:
        images = images[shard[0] :: shard[1]]
    done: dict[str, list[dict]] = {}
    if target.exists() and not overwrite:
        old = load_results(target)
        diff = sorted(k for k in config if k != "limit" and old["config"].get(k) != config[k])
        if diff:
            raise PerceptError(
                f"{target} holds a run with a different config ({', '.join(diff)}): use another "
                "--out or --overwrite to start again"
            )
        for row in old["rows"]:
            done.setdefault(row["image"], []).append(row)
    elif overwrite and shard is not None:  # the other shards' outputs stay
        for item in images:
            for (codec, quality) in coders:
                for method in methods:
                    _png_path(cache, item.name, codec, quality, method).unlink(missing_ok=True)
    elif overwrite and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    beyond = set(done) - {item.name for item in images}
    if beyond:  # a smaller limit would silently drop finished images from the file
        raise PerceptError(
            f"{out} has results for {len(beyond)} images beyond --limit {limit}: raise the limit, "
            "use another --out or --overwrite"
        )
    models = (None, {})
    if prior:
        models = (Enhancer.from_pretrained(prior, consistency_model=consistency_model), {})
    if fusion_names:
        models[1].update({key: load_fusion(name) for key, name in fusion_names.items()})
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
    if shard is not None:
        results["shard"] = {"index": shard[0], "count": shard[1], "of": out.name}
    per_image = len(coders) * len(methods)

    def flush() -> None:
        results["rows"] = [r for img in images for r in done.get(img.name, [])]
        save_results(target, results)

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
    if shard is None:
        results["cells"] = _cells(images, config, cache, deep_metrics, progress)
    flush()
    return results


def merge(out: str | Path, shards: Sequence[str | Path] | None = None, *, progress: bool = True) -> dict:
    """Join the shard files of a run into ``out`` (module docstring); returns the results.

    ``shards`` defaults to every OUT_STEM.shard-*-of-*.json beside ``out``. They must be all n shards
    of one config, each finished; the cells are computed on the outputs in ``out``'s image folder."""
    out = Path(out)
    if shards is None:
        shards = sorted(out.parent.glob(f"{glob.escape(out.stem)}.shard-*-of-*{out.suffix}"))
    if not shards:
        raise PerceptError(f"no shard files of {out} found: run percept eval --shard I/N first")
    parts = [(Path(p), load_results(p)) for p in shards]
    for path, part in parts:
        if "shard" not in part:
            raise PerceptError(f"{path} is not a shard file (it has no 'shard' entry)")
    count = parts[0][1]["shard"]["count"]
    indices = sorted(part["shard"]["index"] for _, part in parts)
    if indices != list(range(count)) or any(p["shard"]["count"] != count for _, p in parts):
        have = ", ".join(f"{p['shard']['index']}/{p['shard']['count']}" for _, p in parts)
        raise PerceptError(f"merging needs shards 0..{count - 1} of {count} once each; got {have}")
    config = parts[0][1]["config"]
    for path, part in parts:
        if part["config"] != config:
            raise PerceptError(f"{path} was run with another config than {parts[0][0]}")
    by_index = {part["shard"]["index"]: part for _, part in parts}
    images = load_dataset(config["dataset"], crop=config["crop"], limit=config["limit"])
    per_image = sum(len(qs) for qs in config["codecs"].values()) * len(config["methods"])
    rows = []
    for position, item in enumerate(images):
        part = by_index[position % count]
        mine = [r for r in part["rows"] if r["image"] == item.name]
        if len(mine) != per_image:
            raise PerceptError(
                f"shard {position % count}/{count} has not finished image {item.name}: run it again "
                f"(percept eval ... --shard {position % count}/{count}), then merge"
            )
        rows += mine
    first = parts[0][1]
    results = {
        "schema": SCHEMA,
        "name": first["name"],
        "description": first["description"],
        "environment": first["environment"],
        "config": config,
        "unavailable": {k: v for _, part in parts for k, v in part["unavailable"].items()},
        "rows": rows,
        "cells": [],
        "merged": {"shards": count, "environments": [by_index[i]["environment"] for i in range(count)]},
    }
    with results_lock(out):
        results["cells"] = _cells(images, config, _cache_dir(out), config["deep_metrics"], progress)
        save_results(out, results)
    return results
