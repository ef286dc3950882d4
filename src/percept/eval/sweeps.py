"""The sigma sweep of paper 1 (section 4.4, Fig. 4): distortion and realism against the noise level.

For one codec setting, every image is encoded (real bytes), decoded, noised to sigma and denoised by
the prior (`percept.enhancer.pipeline.enhance`). Per image the sweep records PSNR and the MSE ratio to the plain
decode (the paper's rule: the recommended sigma roughly doubles the MSE, eq. 3 and 14); per sigma it
records the realism of the whole set (sliced Wasserstein distance on Laplacian-pyramid patches,
normalised by the reference set, with its spread over patch seeds).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs.base import operator_of
from percept.codecs.container import bpp, decode_all, decode_file, encode_image
from percept.codecs.jpeg_consistency import projector_for
from percept.core.images import quantize
from percept.enhancer.pipeline import Enhancer, enhance
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.signalling import signal_sigma, signalled_entry
from percept.errors import PerceptError
from percept.metrics import mse, psnr, swd, swd_gain


def _enhance_all(
    decoded, denoiser, sigma: float, preset, seed: int, progress: bool = False, projections=None
):
    """Each decode enhanced at sigma with its own seed (seed + index), so a result does not depend
    on which other images are in the set; `projections` (one per image, or None) are applied to
    the outputs."""
    outputs = []
    projections = projections or [None] * len(decoded)
    for i, x_hat in enumerate(tqdm(decoded, desc="enhance", disable=not progress)):
        gen = torch.Generator().manual_seed(seed + i)
        y = enhance(x_hat, denoiser, float(sigma), preset, generator=gen, project=projections[i])
        outputs.append(quantize(y))
    return outputs


def _image_row(name: str, x: torch.Tensor, y: torch.Tensor, bpp: float, **keys) -> dict:
    return {"image": name, **keys, "bpp": bpp, "psnr": float(psnr(x, y)), "mse": float(mse(x, y))}


def sigma_sweep(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    sigmas: Sequence[float],
    *,
    preset: str = "medium",
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    bootstrap: int = 0,
    patches_per_image: int = 128,
    progress: bool = True,
    consistency: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rows, per-sigma summary). sigma 0, the plain decode, is always included.

    The summary's `mse_ratio` is mean MSE at sigma over mean MSE of the decode (a set-level ratio,
    as `calibrate_sigma` uses), and `swd`/`swd_std` the realism distance of the enhanced set to the
    originals (lower is better; compare with `swd_floor`, the distance of the originals to
    themselves with fresh patch samples). `bootstrap` N > 0 adds `swd_gain_low`/`swd_gain_high`: a
    90% paired bootstrap interval over the images of the realism gained over the decode
    (`percept.metrics.swd_gain`; N resamples, each two SWD evaluations). `patches_per_image` goes
    to every SWD: more patches lower the estimator's floor (whole Kodak images hold many more).
    `consistency` (JPEG): every enhanced output is projected into its file's quantisation cells
    (`percept.codecs.jpeg_consistency`).
    """
    sigmas = sorted({0.0, *map(float, sigmas)})
    names, originals, decoded, bpps, projections = decode_all(images, codec, consistency)
    opts = {"seeds": swd_seeds, "patches_per_image": patches_per_image}
    floor = swd(originals, originals, **opts)
    rows, summary = [], []
    for sigma in tqdm(list(sigmas), desc="sigma sweep", disable=not progress):
        outputs = (
            decoded
            if sigma == 0
            else _enhance_all(decoded, denoiser, sigma, preset, seed, projections=projections)
        )
        for i, y in enumerate(outputs):
            rows.append(_image_row(names[i], originals[i], y, bpps[i], sigma=float(sigma)))
        summary.append({"sigma": float(sigma)})
        summary[-1].update(
            _realism(originals, decoded, outputs, bootstrap if sigma > 0 else 0, seed, opts)
        )
    return _tables(rows, summary, "sigma", 0.0, floor)


def _realism(originals, decoded, outputs, bootstrap: int, seed: int, opts: dict) -> dict:
    """SWD of a set of outputs (with its spread) and, with `bootstrap` > 0, the 90% interval of the
    realism gained over the plain decode."""
    realism = swd(originals, outputs, **opts)
    out = {"swd": realism.mean, "swd_std": realism.std}
    if bootstrap:
        gain = swd_gain(originals, decoded, outputs, resamples=bootstrap, seed=seed, **opts)
        out.update(swd_gain_low=gain.low, swd_gain_high=gain.high)
    return out


def _tables(rows: list[dict], summary: list[dict], key: str, decode_key, floor):
    """(per-image rows, per-setting summary with mean bpp/PSNR/MSE, MSE ratio to the decode and the
    realism floor)."""
    per_image = pd.DataFrame(rows)
    table = per_image.groupby(key, sort=False).agg(
        bpp=("bpp", "mean"), psnr=("psnr", "mean"), mse=("mse", "mean")
    )
    table = table.reset_index().merge(pd.DataFrame(summary), on=key)
    decode_mse = per_image.loc[per_image[key] == decode_key, "mse"].mean()
    table["mse_ratio"] = table["mse"] / decode_mse
    table["swd_floor"] = floor.mean
    return per_image, table


def signalled_sweep(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    prior: str,
    *,
    preset: str = "fast",
    target: float = 2.0,
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    bootstrap: int = 0,
    patches_per_image: int = 128,
    progress: bool = True,
    consistency: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The enhancer at each image's own sigma, signalled by the encoder (`percept.enhancer.signalling`):
    every image is encoded, its sigma calibrated to `target` on it and written into the file, and
    the file decoded and enhanced as `percept decode --sigma auto` does (image i with seed + i);
    with `consistency` (JPEG), calibrated and enhanced with the consistency projection.

    Returns (per-image rows with each image's `sigma`, a two-row summary like `sigma_sweep`'s with
    `mode` "decode" and "signalled"; the signalled row's bpp counts the header entry, its `sigma`
    is the median over images)."""
    enhancer = Enhancer(
        denoiser, EnhancerConfig(preset, consistency=consistency), prior_name=prior
    )
    names = list(images)
    originals = [images[n] for n in names]
    opts = {"seeds": swd_seeds, "patches_per_image": patches_per_image}
    floor = swd(originals, originals, **opts)
    decoded, outputs, sigmas, rows, signalled_rows = [], [], [], [], []
    for i, x in enumerate(tqdm(originals, desc="signal + enhance", disable=not progress)):
        plain = encode_image(x, codec)
        data, _ = signal_sigma(plain, x, enhancer, seed=seed + i, target=target)
        x_hat, record = decode_file(data)  # the same payload as `plain`: the same decode
        entry, _ = signalled_entry(record, enhancer)
        project = projector_for(record.codec, record.payload) if consistency else None
        y = quantize(enhancer(x_hat, entry["sigma"], seed=entry["seed"], project=project))
        decoded.append(x_hat)
        outputs.append(y)
        sigmas.append(entry["sigma"])
        plain_bpp = bpp(plain, record.height, record.width)
        rows.append(_image_row(names[i], x, x_hat, plain_bpp, mode="decode", sigma=0.0))
        signalled_rows.append(
            _image_row(names[i], x, y, record.bpp, mode="signalled", sigma=entry["sigma"])
        )
    rows += signalled_rows
    summary = [
        {"mode": "decode", **_realism(originals, decoded, decoded, 0, seed, opts)},
        {"mode": "signalled", **_realism(originals, decoded, outputs, bootstrap, seed, opts)},
    ]
    per_image, table = _tables(rows, summary, "mode", "decode", floor)
    table["sigma"] = [0.0, float(np.median(sigmas))]
    return per_image, table


def preset_sweep(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    methods: Sequence[str | tuple[str, int]],
    sigma: float,
    *,
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    progress: bool = True,
    consistency_model=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The speed-performance trade-off (paper 1, Fig. 2 and Table 2) at one sigma.

    methods: preset names ("medium", "slow", ...) or (sampler, steps) pairs such as ("dpmpp_2m", 4).
    Returns (per-image rows, per-method summary): the sampler, network evaluations, seconds per image (median
    wall time of the enhancer call; the codec's own decode is excluded and listed as "decode"),
    PSNR, MSE ratio to the plain decode and SWD realism (x1e3, lower is better) with its spread.
    A method this denoiser or codec cannot run (e.g. "fast" without a consistency model, "slow"
    without a differentiable codec) gets a row saying why instead of numbers. `consistency_model`,
    when given, runs the consistency-sampler methods (the fast presets) in place of `denoiser`.
    """
    operator = operator_of(codec)
    enhancer = Enhancer(denoiser, consistency_model=consistency_model)
    names, originals, decoded, bpps, _ = decode_all(images, codec)
    floor = swd(originals, originals, seeds=swd_seeds)
    rows, summary = [], []
    plain = swd(originals, decoded, seeds=swd_seeds)
    summary.append({"method": "decode", "sampler": None, "nfe": 0, "seconds": 0.0, "swd": plain.mean,
                    "swd_std": plain.std, "unavailable": None})  # fmt: skip
    rows += [
        _image_row(n, x, d, b, method="decode")
        for n, x, d, b in zip(names, originals, decoded, bpps)
    ]
    for method in tqdm(list(methods), desc="presets", disable=not progress):
        config = (
            EnhancerConfig.from_key(method)
            if isinstance(method, str)
            else EnhancerConfig(sampler=method[0], steps=method[1])
        )
        p, model = config.schedule, enhancer.with_config(config).denoiser
        label = method if isinstance(method, str) else f"{method[0]} x{method[1]}"
        outputs, seconds = [], []
        try:
            for i, x_hat in enumerate(decoded):
                gen = torch.Generator().manual_seed(seed + i)
                t0 = time.perf_counter()
                y = enhance(x_hat, model, float(sigma), config, generator=gen, operator=operator)
                seconds.append(time.perf_counter() - t0)
                outputs.append(quantize(y))
        except PerceptError as exc:
            summary.append({"method": label, "sampler": p.sampler, "nfe": p.nfe, "unavailable": str(exc)})
            continue
        for i, y in enumerate(outputs):
            rows.append(_image_row(names[i], originals[i], y, bpps[i], method=label))
        realism = swd(originals, outputs, seeds=swd_seeds)
        summary.append({"method": label, "sampler": p.sampler, "nfe": p.nfe, "seconds": float(np.median(seconds)),
                        "swd": realism.mean, "swd_std": realism.std, "unavailable": None})  # fmt: skip
    per_image = pd.DataFrame(rows)
    table = per_image.groupby("method", sort=False).agg(psnr=("psnr", "mean"), mse=("mse", "mean"))
    table = pd.DataFrame(summary).merge(table.reset_index(), on="method", how="left")
    table["mse_ratio"] = table["mse"] / table.loc[table["method"] == "decode", "mse"].iloc[0]
    table["swd_floor"] = floor.mean
    table["sigma"] = float(sigma)
    return per_image, table


def solver_crossover(
    table: pd.DataFrame, *, ode: str = "dpmpp_2m", sde: str = "euler_ancestral"
) -> pd.DataFrame:
    """Paper 1's Fig. 2 question at equal cost: an ODE and an SDE solver at every number of network
    evaluations both ran in a `preset_sweep` table (presets count as their sampler: `medium` is
    dpmpp_2m, `medium-sde` euler_ancestral).

    One row per shared NFE, fewest first: each solver's method, SWD, spread and seconds, and
    `more_realistic`: "ODE" or "SDE" when the lower SWD is lower by more than the larger of the two
    spreads, else "neither" (the difference is within the patch sampling's spread). The paper finds
    the ODE ahead at few evaluations and the SDE beyond (discretisation against approximation
    error)."""
    ran = table[table["unavailable"].isna()] if "unavailable" in table else table
    sides = {}
    for family, sampler in (("ode", ode), ("sde", sde)):
        rows = ran[ran["sampler"] == sampler].drop_duplicates("nfe")  # the first run of a step count
        sides[family] = rows.set_index("nfe")[["method", "swd", "swd_std", "seconds"]]
    pairs = sides["ode"].join(sides["sde"], how="inner", lsuffix="_ode", rsuffix="_sde")
    return judge_crossover(pairs.reset_index())  # sorts by NFE


def judge_crossover(pairs: pd.DataFrame) -> pd.DataFrame:
    """`pairs` (columns nfe, swd_ode, swd_std_ode, swd_sde, swd_std_sde) with `more_realistic`
    added, fewest evaluations first: the solver whose SWD is lower by more than the larger spread,
    else "neither"."""
    pairs = pairs.sort_values("nfe").reset_index(drop=True)
    gap = pairs["swd_sde"] - pairs["swd_ode"]
    spread = np.maximum(pairs["swd_std_ode"], pairs["swd_std_sde"])
    pairs["more_realistic"] = np.where(gap > spread, "ODE", np.where(-gap > spread, "SDE", "neither"))
    return pairs


def crossover_holds(pairs: pd.DataFrame) -> bool | None:
    """Whether `solver_crossover`'s rows show the paper's ordering: the ODE solver more realistic at
    the fewest shared evaluations and the SDE solver at the most. None without a pair."""
    if pairs.empty:
        return None
    return pairs["more_realistic"].iloc[0] == "ODE" and pairs["more_realistic"].iloc[-1] == "SDE"


def describe_crossover(pairs: pd.DataFrame) -> str:
    """One sentence on `solver_crossover`'s rows, chosen from the numbers."""
    if pairs.empty:
        return "No ODE and SDE solver ran at the same number of network evaluations in this run."
    counts = ", ".join(str(int(n)) for n in pairs["nfe"])
    wins = dict(zip(pairs["nfe"].astype(int), pairs["more_realistic"]))
    if crossover_holds(pairs):
        last_ode = max(n for n, w in wins.items() if w == "ODE")
        first_sde = min(n for n, w in wins.items() if w == "SDE" and n > last_ode)
        return (f"At equal network evaluations ({counts}) the ODE solver is the more realistic at "
                f"{int(pairs['nfe'].iloc[0])} and the SDE solver at {int(pairs['nfe'].iloc[-1])}: paper 1's "
                f"crossover appears here, between {last_ode} and {first_sde} evaluations.")  # fmt: skip
    ahead = {w for w in wins.values() if w != "neither"}
    if not ahead:
        return (f"At equal network evaluations ({counts}) neither solver is more realistic than the other "
                f"beyond the SWD's spread: no crossover shows.")  # fmt: skip
    if ahead == {"ODE"}:
        said = (f"At equal network evaluations ({counts}) the ODE solver is never less realistic than the "
                f"SDE solver: no crossover up to {int(pairs['nfe'].iloc[-1])} evaluations.")  # fmt: skip
        if len(pairs) > 1 and "swd_sde" in pairs and pairs["swd_sde"].iloc[-1] < pairs["swd_sde"].iloc[-2]:
            last, before = pairs.iloc[-1], pairs.iloc[-2]
            said += (f" The SDE is still gaining at the most evaluations (SWD {before.swd_sde:.1f} at "
                     f"{int(before.nfe)}, {last.swd_sde:.1f} at {int(last.nfe)}), so a crossover may lie further on.")  # fmt: skip
        return said
    if ahead == {"SDE"}:
        return (f"At equal network evaluations ({counts}) the SDE solver is never less realistic than the "
                f"ODE solver, even at {int(pairs['nfe'].iloc[0])}: no crossover shows.")  # fmt: skip
    order = "; ".join(f"{n}: {w}" for n, w in wins.items())
    return (f"At equal network evaluations the more realistic solver changes without the paper's order "
            f"(fewest evaluations first: {order}).")  # fmt: skip


def level_breakdown(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    sigma: float,
    *,
    preset: str = "fast",
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    progress: bool = True,
    consistency: bool = False,
) -> pd.DataFrame:
    """Where realism is gained and lost: the SWD of each Laplacian-pyramid level (0 = finest), for
    the originals against themselves (`floor`), the plain decode (`decode`) and the enhanced output
    at `sigma` (`enhanced`; per-image seeds as in `sigma_sweep`). One row per (output, level); the
    mean over levels of a row set is the `swd` the sweeps report. `consistency`: as in
    `sigma_sweep`."""
    _, originals, decoded, _, projections = decode_all(images, codec, consistency)
    enhanced = _enhance_all(decoded, denoiser, sigma, preset, seed, progress, projections)
    rows = []
    for output, test in (("floor", originals), ("decode", decoded), ("enhanced", enhanced)):
        per_level = swd(originals, test, seeds=swd_seeds).per_level
        rows += [{"output": output, "level": k, "swd": v} for k, v in enumerate(per_level)]
    return pd.DataFrame(rows)


def sweep_findings(table: pd.DataFrame, by: Sequence[str] = ("setting", "preset"),
                   target_ratio: float = 2.0) -> pd.DataFrame:  # fmt: skip
    """What a sigma sweep found, one row per line of `table` (grouped by `by`): the decode's SWD and
    PSNR (sigma 0), the most realistic sigma with its SWD, MSE ratio and PSNR change, and the sigma at
    which the MSE ratio reaches `target_ratio` (paper 1's rule; linear between the measured sigmas,
    NaN when the line stays below it) with the SWD there.

    The book states these in its prose; the rule's point is read off the measured line, not
    recomputed, so a coarse sigma grid gives a coarse answer."""
    out = []
    for keys, line in table.groupby(list(by), sort=False):
        line = line.sort_values("sigma")
        decode = line[line["sigma"] == 0]
        if decode.empty:
            raise PerceptError(f"sweep line {keys}: no sigma 0 (the plain decode) to compare with")
        decode = decode.iloc[0]
        noised = line[line["sigma"] > 0]
        best = noised.loc[noised["swd"].idxmin()] if len(noised) else decode
        ratio, sigma = line["mse_ratio"].to_numpy(), line["sigma"].to_numpy()
        reached = np.nonzero(ratio >= target_ratio)[0]
        if len(reached) and reached[0] > 0:
            i = reached[0]  # first crossing, linear between the two measured points around it
            t = (target_ratio - ratio[i - 1]) / (ratio[i] - ratio[i - 1])
            at_target = float(sigma[i - 1] + t * (sigma[i] - sigma[i - 1]))
            swd_target = float(line["swd"].iloc[i - 1] + t * (line["swd"].iloc[i] - line["swd"].iloc[i - 1]))
        else:
            at_target = swd_target = float("nan")
        out.append({
            **dict(zip(by, keys if isinstance(keys, tuple) else (keys,))),
            "decode_swd": float(decode["swd"]), "decode_psnr": float(decode["psnr"]),
            "best_sigma": float(best["sigma"]), "best_swd": float(best["swd"]),
            "best_mse_ratio": float(best["mse_ratio"]), "best_psnr_change": float(best["psnr"] - decode["psnr"]),
            "gain": float(decode["swd"] - best["swd"]), "max_sigma": float(sigma[-1]),
            "max_mse_ratio": float(ratio[-1]), "sigma_at_target": at_target, "swd_at_target": swd_target,
        })  # fmt: skip
    return pd.DataFrame(out)
