"""Results files of `percept eval` (schema ``percept.results/1``) and their summaries.

A results file is CompressAI-like ``{name, description, ...}`` JSON with per-image ``rows`` (one per
image x codec x quality x method) and set-level ``cells`` (one per codec x quality x method: SWD and
the deep metrics, which are ``{"available": false, "reason": ...}`` when their weights are missing).
``summarize`` averages rows per cell; ``bd_table`` gives Bjontegaard deltas against a reference codec.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import torch

from percept import metrics
from percept.core.images import atomic_write_bytes
from percept.errors import PerceptError
from percept.metrics import bd_metric, bd_rate

# The format's name, written into every results file: data, not a module path (it stays when the
# module moves).
SCHEMA = "percept.results/1"
TIMING_FIELDS = ("decode_s",)  # differ between runs; everything else is deterministic
PER_IMAGE = ("bytes", "bpp", "psnr", "ms_ssim", "ssimulacra2", "decode_s")
CELL_KEYS = ("codec", "quality", "method")
DEEP_METRICS = ("lpips", "fid")
MS_SSIM_MIN_SIDE = 161  # MS-SSIM's five scales need a short side above 160 px


def load_results(path: str | Path) -> dict:
    """Read a results file, checking its schema."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PerceptError(f"no results file at {path}") from None
    except ValueError as exc:
        raise PerceptError(
            f"{path} is not valid JSON ({exc}); delete it or use --overwrite"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise PerceptError(f"{path} is not a {SCHEMA} results file")
    return data


def save_results(path: str | Path, results: dict) -> None:
    """Write a results file atomically (a killed run leaves the previous complete version)."""
    text = json.dumps(results, indent=1, sort_keys=False, allow_nan=True)
    atomic_write_bytes(path, (text + "\n").encode())


def strip_timings(results: dict) -> dict:
    """Rows and cells without wall-clock fields: what must match between a fresh and a resumed run."""
    rows = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in results["rows"]]
    return {"config": results["config"], "rows": rows, "cells": results["cells"]}


def image_metrics(x: torch.Tensor, y: torch.Tensor, unavailable: dict) -> dict:
    """Per-image metrics of output ``y`` against original ``x``; None where a metric cannot apply."""
    row = {"psnr": float(metrics.psnr(y, x)[0])}
    small = min(x.shape[-2:]) < MS_SSIM_MIN_SIDE
    row["ms_ssim"] = None if small else float(metrics.ms_ssim(y, x)[0])
    try:
        row["ssimulacra2"] = float(metrics.ssimulacra2(y, x)[0])
    except metrics.MetricUnavailable as exc:
        unavailable["ssimulacra2"] = str(exc)
        row["ssimulacra2"] = None
    return row


def set_metrics(references, tests, swd_seeds, deep_metrics, deep_status: dict) -> dict:
    """SWD of ``tests`` vs ``references`` plus the deep metrics, each ``{"available": false,
    "reason"}`` when its weights are missing (``deep_status`` remembers a failure across cells)."""
    s = metrics.swd(references, tests, seeds=swd_seeds)
    cell = {
        "n": len(tests),
        "swd": {
            "mean": s.mean,
            "std": s.std,
            "per_seed": list(s.per_seed),
            "normalization": s.normalization,
        },
    }
    for name in deep_metrics:
        if name in deep_status:  # failed once: the same reason holds for every cell
            cell[name] = deep_status[name]
            continue
        try:
            if name == "lpips":
                pairs = zip(tests, references)
                value = float(torch.cat([metrics.lpips(t, r) for t, r in pairs]).mean())
            else:
                value = float(metrics.fid(references, tests))
            cell[name] = {"available": True, "value": value}
        except metrics.MetricUnavailable as exc:
            deep_status[name] = cell[name] = {"available": False, "reason": str(exc)}
    return cell


def _cell_frame(results: dict) -> pd.DataFrame:
    cells = []
    for cell in results.get("cells", []):
        entry = {k: cell[k] for k in CELL_KEYS}
        swd = cell.get("swd", {})
        entry["swd"] = swd.get("mean", math.nan)
        entry["swd_std"] = swd.get("std", math.nan)
        for name in ("lpips", "fid"):
            metric = cell.get(name, {})
            entry[name] = metric.get("value", math.nan) if metric.get("available") else math.nan
        cells.append(entry)
    return pd.DataFrame(cells, columns=[*CELL_KEYS, "swd", "swd_std", "lpips", "fid"])


def summarize(results: dict) -> pd.DataFrame:
    """One row per (codec, quality, method): per-image means plus the cell's set-level metrics."""
    rows = pd.DataFrame(results["rows"])
    if rows.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, *PER_IMAGE, "n", "swd", "swd_std"])
    rows = rows.astype({c: float for c in PER_IMAGE if c in rows})
    grouped = rows.groupby(list(CELL_KEYS), sort=False)
    means = grouped[[c for c in PER_IMAGE if c in rows]].mean()
    means["n"] = grouped.size()
    table = means.reset_index().merge(_cell_frame(results), on=list(CELL_KEYS), how="left")
    return table.dropna(axis=1, how="all")


def bd_table(results: dict, reference: str | None = None) -> pd.DataFrame:
    """BD-rate (%) of every codec against ``reference`` (default: the first codec of the run).

    Per method, on the mean-bpp curves: vs PSNR (higher is better) and vs SWD (lower is better).
    Negative = fewer bits for the same quality. NaN where the curves do not overlap or a codec has
    fewer than two qualities.
    """
    table = summarize(results)
    codecs = list(results["config"]["codecs"])
    reference = reference or codecs[0]
    if reference not in codecs:
        raise PerceptError(
            f"reference codec {reference!r} is not in the results ({', '.join(codecs)})"
        )
    out = []
    for method, part in table.groupby("method", sort=False):
        ref = part[part.codec == reference].sort_values("bpp")
        for codec in codecs:
            if codec == reference:
                continue
            test = part[part.codec == codec].sort_values("bpp")
            entry = {"codec": codec, "reference": reference, "method": method}
            for metric, higher in (("psnr", True), ("swd", False)):
                entry[f"bd_rate_{metric}"] = _safe_bd(ref, test, metric, higher)
            out.append(entry)
    return pd.DataFrame(
        out, columns=["codec", "reference", "method", "bd_rate_psnr", "bd_rate_swd"]
    )


def method_table(results: dict, base: str = "decode") -> pd.DataFrame:
    """Paper 1's Table 3 layout: per codec and method, the gain over that codec's `base` method.

    Columns: median decode time per image (s; the codec's decode plus the method), BD-PSNR (dB) and
    BD-SWD (x1e3, positive = more realistic) against the base curve at the same rates (an enhancer
    re-uses the codec's bits, so the rates are equal and the BD figure is the mean difference over
    the common log-rate range). NaN where a codec has fewer than two qualities.
    """
    table = summarize(results)
    out = []
    for codec, part in table.groupby("codec", sort=False):
        ref = part[part.method == base].sort_values("bpp")
        for method, test in part.groupby("method", sort=False):
            test = test.sort_values("bpp")
            entry = {"codec": codec, "method": method, "qualities": len(test)}
            entry["decode_s"] = float(test["decode_s"].median()) if "decode_s" in test else math.nan
            for metric, higher in (("psnr", True), ("swd", False)):
                entry[f"bd_{metric}"] = (
                    0.0 if method == base else _safe_bd(ref, test, metric, higher, bd_metric)
                )
            out.append(entry)
    return pd.DataFrame(
        out, columns=["codec", "method", "qualities", "decode_s", "bd_psnr", "bd_swd"]
    )


def _safe_bd(ref: pd.DataFrame, test: pd.DataFrame, metric: str, higher: bool, fn=bd_rate) -> float:
    """`fn` (bd_rate or bd_metric) of two curves, NaN where there is no curve to integrate."""
    if metric not in ref or len(ref) < 2 or len(test) < 2:
        return math.nan
    try:
        return fn(ref.bpp, ref[metric], test.bpp, test[metric], higher_is_better=higher)
    except ValueError:  # e.g. two qualities with the same metric value: no curve to integrate
        return math.nan


def format_summary(results: dict, reference: str | None = None) -> str:
    """The `percept eval` printout: a table per codec and the BD-rate table."""
    table = summarize(results)
    cols = [
        c
        for c in (
            "quality",
            "method",
            "n",
            "bpp",
            "psnr",
            "ms_ssim",
            "ssimulacra2",
            "swd",
            "swd_std",
            "decode_s",
        )
        if c in table
    ]
    parts = [f"{results['name']}: {results['description']}"]
    for codec, part in table.groupby("codec", sort=False):
        parts += ["", f"== {codec} ==", part[cols].to_string(index=False, float_format="%.4g")]
    bd = bd_table(results, reference)
    if not bd.empty:
        parts += [
            "",
            "BD-rate (%) vs the reference codec (negative = fewer bits for the same quality):",
            bd.to_string(index=False, float_format="%.2f"),
        ]
    unavailable = {
        name: cell[name]["reason"]
        for cell in results["cells"]
        for name in ("lpips", "fid")
        if name in cell and not cell[name].get("available")
    }
    parts += [f"{name}: unavailable ({reason})" for name, reason in unavailable.items()]
    return "\n".join(parts)
