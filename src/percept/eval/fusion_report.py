"""Paper 2's measurements, read from a harness results file (`percept eval ... fuse:TAU`).

The harness has already encoded every image once per rate and decoded it every way (plain,
fused at each tau, paper 1's presets), in one process, and kept each output as a PNG. This module
turns that into the chapter's tables: the tau sweep with realism intervals, the tau whose BD-PSNR
loss is at most 1 dB, BD-rates on realism at that tau (paper 2's headline, with the metrics that
need no downloaded weights), the head-to-head with paper 1 at equal PSNR loss, and the gates.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs.compressai_codec import deserialize
from percept.codecs.container import encode_image, unpack
from percept.core.images import quantize
from percept.eval.harness import output_images
from percept.eval.results import load_results
from percept.fusion.decode import base_codec_of, check_record
from percept.fusion.latents import from_image, from_strings, synthesize
from percept.fusion.module import LatentFusion
from percept.metrics import bd_metric, bd_rate, patch_kid, psnr, swd, swd_gains, swd_many

SWD_OPTIONS = {"seeds": (0, 1, 2, 3), "patches_per_image": 128}


def tau_of(method: str) -> float | None:
    """The tau of a "fuse:TAU" method, 0 for "decode" (the base codec), None otherwise."""
    if method == "decode":
        return 0.0
    return float(method.split(":")[1]) if method.startswith("fuse:") else None


def method_table(
    results_path, *, bootstrap: int = 20, seed: int = 0, progress: bool = True
) -> pd.DataFrame:
    """One row per (quality, method): image means of bpp, PSNR, MS-SSIM, SSIMULACRA 2 and decode
    time; SWD (x1e3) with its spread; the realism gained over the plain decode with a 90% paired
    bootstrap interval over images; patch KID (x1e3, finest pyramid level). The methods of one rate
    share the bootstrap's resamples (`swd_gains`); a full table still takes minutes on a CPU:
    `progress` shows a bar on stderr."""
    results = load_results(results_path)
    rows = pd.DataFrame(results["rows"])
    codec = next(iter(results["config"]["codecs"]))
    out = []
    for quality, at_rate in tqdm(
        rows.groupby("quality", sort=False), desc="fusion table", disable=not progress
    ):
        methods = list(dict.fromkeys(at_rate.method))
        refs = output_images(results_path, results, codec, quality, "original")
        outputs = {m: output_images(results_path, results, codec, quality, m) for m in methods}
        realism = dict(zip(methods, swd_many(refs, list(outputs.values()), **SWD_OPTIONS)))
        gained = [m for m in methods if m != "decode"]
        gains = {}
        if bootstrap and gained:
            gains = dict(zip(gained, swd_gains(
                refs, outputs["decode"], [outputs[m] for m in gained], resamples=bootstrap,
                seed=seed, **SWD_OPTIONS)))  # fmt: skip
        for method in methods:
            group = at_rate[at_rate.method == method]
            row = {
                "quality": int(quality), "method": method, "tau": tau_of(method), "n": len(group),
                **{k: float(pd.to_numeric(group[k], errors="coerce").mean())
                   for k in ("bpp", "psnr", "ms_ssim", "ssimulacra2", "decode_s")},
                "swd": realism[method].mean, "swd_std": realism[method].std,
                "kid": patch_kid(refs, outputs[method], seed=seed)[0],
            }  # fmt: skip
            if method in gains:
                gain = gains[method]
                row.update(swd_gain=gain.gain, gain_low=gain.low, gain_high=gain.high)
            out.append(row)
    return pd.DataFrame(out)


def bd_psnr_by_tau(table: pd.DataFrame) -> pd.Series:
    """BD-PSNR (dB, over the rates) of each fuse:TAU curve against the base codec's decode; with a
    single rate, the PSNR difference at that rate (the curves share their rates: fusion adds no
    bits)."""
    base = table[table.method == "decode"].sort_values("quality")
    out = {}
    for tau, curve in table[table.method.str.startswith("fuse:")].groupby("tau"):
        curve = curve.sort_values("quality")
        if len(base) < 2:
            out[tau] = float(curve.psnr.mean() - base.psnr.mean())
        else:
            out[tau] = bd_metric(base.bpp, base.psnr, curve.bpp, curve.psnr)
    return pd.Series(out, name="bd_psnr")


def tau_within(table: pd.DataFrame, max_loss_db: float = 1.0) -> float:
    """The largest tau whose BD-PSNR loss against the base codec is at most `max_loss_db`."""
    bd = bd_psnr_by_tau(table)
    ok = bd[bd >= -max_loss_db]
    return float(ok.index.max()) if len(ok) else 0.0


def bd_rates(table: pd.DataFrame, tau: float) -> tuple[float, float]:
    """BD-rate (%) of fuse:tau against the decode on SWD (lower is better) and on SSIMULACRA 2
    (higher is better), from a table's per-rate image means (`method_table`, or the harness's cells
    as `claims.cell_table` reads them). Chapter 07's headline and the claims chapter both take it,
    so the book states one figure for one claim."""
    base = table[table.method == "decode"].sort_values("quality")
    test = table[table.method == f"fuse:{tau:g}"].sort_values("quality")
    return (bd_rate(base.bpp, base.swd, test.bpp, test.swd, higher_is_better=False),
            bd_rate(base.bpp, base.ssimulacra2, test.bpp, test.ssimulacra2, higher_is_better=True))  # fmt: skip


def headline(
    results_path,
    table: pd.DataFrame,
    tau: float,
    *,
    bootstrap: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """BD-rate of fuse:tau against the base decode on SWD (lower is better) and SSIMULACRA 2
    (higher is better), with 90% bootstrap intervals over images (paper 2's LPIPS-BDRate, with the
    metrics that need no downloaded weights). Negative = fewer bits for the same realism. The
    point estimates are `bd_rates` of `table` (SWD over all its seeds); each resample draws the
    images with replacement and one patch seed."""
    results = load_results(results_path)
    rows = pd.DataFrame(results["rows"])
    codec = next(iter(results["config"]["codecs"]))
    method = f"fuse:{tau:g}"
    qualities = sorted(table.quality.unique())
    names = list(dict.fromkeys(rows.image))
    images = {
        (q, m): output_images(results_path, results, codec, q, m)
        for q in qualities for m in ("original", "decode", method)
    }  # fmt: skip
    per_image = rows.set_index(["quality", "method", "image"])

    def curves(idx, swd_seed: int):
        out = {}
        for m in ("decode", method):
            bpp, s2, realism = [], [], []
            for q in qualities:
                bpp.append(float(np.mean([per_image.loc[(q, m, names[i]), "bpp"] for i in idx])))
                s2.append(
                    float(np.mean([per_image.loc[(q, m, names[i]), "ssimulacra2"] for i in idx]))
                )
                refs = [images[(q, "original")][i] for i in idx]
                realism.append(swd(refs, [images[(q, m)][i] for i in idx],
                                   **{**SWD_OPTIONS, "seeds": (swd_seed,)}).mean)  # fmt: skip
            out[m] = (bpp, s2, realism)
        (b0, s0, r0), (b1, s1, r1) = out["decode"], out[method]
        return (bd_rate(b0, r0, b1, r1, higher_is_better=False),
                bd_rate(b0, s0, b1, s1, higher_is_better=True))  # fmt: skip

    point = bd_rates(table, tau)
    rng = np.random.default_rng(seed)
    samples = [
        curves(rng.integers(0, len(names), len(names)), 1000 + r)
        for r in tqdm(range(bootstrap), desc="BD-rate bootstrap", disable=not progress)
    ]

    def interval(k):
        values = [s[k] for s in samples if math.isfinite(s[k])]
        return [float(v) for v in np.quantile(values, [0.05, 0.95])] if values else [math.nan] * 2

    return {
        "tau": tau, "bd_psnr": float(bd_psnr_by_tau(table)[tau]),
        "bd_rate_swd": point[0], "bd_rate_swd_interval": interval(0),
        "bd_rate_ssimulacra2": point[1], "bd_rate_ssimulacra2_interval": interval(1),
        "bootstrap": bootstrap,
    }  # fmt: skip


def head_to_head(table: pd.DataFrame, tau: float, preset: str = "fast") -> pd.DataFrame:
    """Per rate: fuse:tau beside paper 1's `preset` at the same PSNR loss (SWD and decode time
    interpolated linearly along the preset's sigma curve), and the preset at its calibrated sigma."""
    out = []
    for q, rate in table.groupby("quality"):
        base = rate[rate.method == "decode"].iloc[0]
        fused = rate[rate.method == f"fuse:{tau:g}"].iloc[0]
        enh = rate[rate.method.str.startswith(f"enhance:{preset}:")].copy()
        enh["loss"] = base.psnr - enh.psnr
        curve = pd.concat([pd.DataFrame([{"loss": 0.0, "swd": base.swd, "decode_s": base.decode_s}]),
                           enh[["loss", "swd", "decode_s"]]]).sort_values("loss")  # fmt: skip
        loss = base.psnr - fused.psnr
        # a fused decode that costs no PSNR meets the preset's curve at sigma 0: the plain decode
        at = max(loss, 0.0)
        inside = at <= curve.loss.max()
        auto = rate[rate.method == f"enhance:{preset}:auto"]
        out.append({
            "quality": int(q), "bpp": base.bpp, "psnr_decode": base.psnr, "swd_decode": base.swd,
            "psnr_loss": loss, "swd_fusion": fused.swd, "decode_s_fusion": fused.decode_s,
            f"swd_{preset}_same_loss": float(np.interp(at, curve.loss, curve.swd)) if inside else math.nan,
            f"decode_s_{preset}": float(enh.decode_s.mean()) if len(enh) else math.nan,
            f"psnr_loss_{preset}_auto": float(base.psnr - auto.psnr.iloc[0]) if len(auto) else math.nan,
            f"swd_{preset}_auto": float(auto.swd.iloc[0]) if len(auto) else math.nan,
        })  # fmt: skip
    return pd.DataFrame(out)


def gates(results_path, table: pd.DataFrame, tau: float, preset: str = "fast") -> list[dict]:
    """PASS/FAIL rows: tau = 0 bit-exact, PSNR non-increasing in tau, realism beyond the interval
    at the 1 dB tau, and the fused decode's overhead under 25% of a `preset` enhancement."""
    results = load_results(results_path)
    codec = next(iter(results["config"]["codecs"]))
    rows = pd.DataFrame(results["rows"])
    out = []
    for q, rate in table.groupby("quality"):
        if "fuse:0" in results["config"]["methods"]:
            zero = output_images(results_path, results, codec, q, "fuse:0")
            plain = output_images(results_path, results, codec, q, "decode")
            same = sum(torch.equal(a, b) for a, b in zip(zero, plain))
            out.append({"quality": int(q), "gate": "tau = 0 is the base decode, bit for bit",
                        "pass": same == len(zero), "value": f"{same}/{len(zero)} images"})  # fmt: skip
        fuse = rate[rate.method.str.startswith("fuse:")].sort_values("tau")
        steps = np.diff(fuse.psnr.to_numpy())
        out.append({"quality": int(q), "gate": "PSNR non-increasing in tau", "pass": bool((steps <= 1e-9).all()),
                    "value": " > ".join(f"{v:.2f}" for v in fuse.psnr)})  # fmt: skip
        at = rate[rate.method == f"fuse:{tau:g}"].iloc[0]
        out.append({"quality": int(q), "gate": f"realism gained at tau {tau:g} beyond the interval",
                    "pass": bool(at.get("gain_low", math.nan) > 0),
                    "value": f"SWD {rate[rate.method == 'decode'].swd.iloc[0]:.1f} -> {at.swd:.1f}, gain "
                             f"[{at.get('gain_low', math.nan):+.1f}, {at.get('gain_high', math.nan):+.1f}]"})  # fmt: skip
        r = rows[rows.quality == q].pivot(index="image", columns="method", values="decode_s")
        enh = f"enhance:{preset}:auto"
        if enh in r:
            ratio = float(((r[f"fuse:{tau:g}"] - r["decode"]) / (r[enh] - r["decode"])).median())
            out.append({"quality": int(q), "gate": f"fusion overhead < 25% of a {preset} enhancement",
                        "pass": ratio < 0.25, "value": f"median ratio {ratio:.3f}"})  # fmt: skip
    return out


DESIGNS = {
    "blend": {"design": "blend"},
    "start": {"design": "start"},
    "both": {"design": "both"},
    "blend, ancestral": {"design": "blend", "eta": 1.0},
    "blend, 8 steps": {"design": "blend", "steps": 8},
}


def design_sweep(fusion, images: dict, taus, designs=tuple(DESIGNS), *, seed: int = 0):
    """PSNR and SWD (x1e3) over tau for each variant of how the module samples (`DESIGNS`: how tau
    acts, DDIM or ancestral steps, how many), with one trained module: each image is encoded once,
    its latents decoded once, and every variant starts from the same per-image seed. Returns one
    row per (design, tau); tau 0 is the base decode."""

    codec = base_codec_of(fusion)
    names = list(images)
    decoded = []
    for name in names:
        record = unpack(encode_image(images[name], codec))
        check_record(fusion, record)
        h, w, strings, shape = deserialize(record.payload)
        decoded.append((from_strings(fusion.codec_model, strings, torch.Size(shape)), h, w))
    refs = [images[n] for n in names]
    rows = []
    for design in designs:
        variant = LatentFusion(fusion.codec_model, fusion.denoiser, codec_name=fusion.codec_name,
                               quality=fusion.quality, sampling=replace(fusion.sampling, **DESIGNS[design]))  # fmt: skip
        for tau in taus:
            outs = [
                quantize(variant.decode_latents(lat, tau, torch.Generator().manual_seed(seed + i))[..., :h, :w])
                for i, (lat, h, w) in enumerate(decoded)
            ]  # fmt: skip
            rows.append({
                "design": design, "tau": float(tau),
                "psnr": float(np.mean([float(psnr(o, r)) for o, r in zip(outs, refs)])),
                "swd": swd(refs, outs, **SWD_OPTIONS).mean,
            })  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def target_oracle(model, aux, images: dict) -> pd.DataFrame:
    """PSNR and SWD (x1e3) of g_s applied to each candidate target of the latent diffusion, built
    from the true image (what a perfect fusion module would decode at tau = 1): the base latents,
    the auxiliary latents before and after rounding, and the base latents moved by the auxiliary
    encoder's shift. A training-side measurement: it needs the auxiliary encoder (not shipped)."""

    refs, outs = list(images.values()), {}
    for x in refs:
        y, lat = from_image(model, x)
        y_aux = aux(x)
        targets = {
            "base decode (y_hat)": lat.y_hat,
            "continuous: g'_a(x)": y_aux,
            "quantized: Q(g'_a(x))": torch.round(y_aux - lat.means) + lat.means,
            "shift: y_hat + g'_a(x) - g_a(x)": lat.y_hat + (y_aux - y),
            "unquantized base latents y": y,
        }
        for name, latent in targets.items():
            outs.setdefault(name, []).append(quantize(synthesize(model, latent)))
    return pd.DataFrame([
        {"target": name, "psnr": float(np.mean([float(psnr(o, r)) for o, r in zip(imgs, refs)])),
         "swd": swd(refs, imgs, **SWD_OPTIONS).mean}
        for name, imgs in outs.items()
    ])  # fmt: skip
