"""Paper 1's Fig. 4: the sigma traversal against convex interpolation, on the same axes.

Yan et al. (2022) traverse the perception-distortion trade-off by interpolating between the MSE
decode and a perceptual one, x_alpha = (1 - alpha) x_hat + alpha y (`percept.enhancer.interpolate`);
paper 1 (section 4.4) compares that with traversing sigma. `interpolation_sweep` codes each image
once, enhances the decode at one sigma with the same per-image seeds as
`percept.eval.sweeps.sigma_sweep` (so alpha = 1 is the sigma sweep's point at that sigma, exactly),
and records every alpha's distortion and realism in the sigma sweep's columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs.container import decode_all
from percept.core.images import quantize
from percept.enhancer.interpolate import interpolate
from percept.errors import PerceptError
from percept.eval.sweeps import _enhance_all, _image_row, _realism, _tables
from percept.metrics import swd


def interpolation_sweep(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    sigma: float,
    alphas: Sequence[float],
    *,
    preset: str = "fast",
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    patches_per_image: int = 128,
    progress: bool = True,
    consistency: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rows, per-alpha summary) of the convex interpolation between the decode
    (alpha 0) and its enhancement at `sigma` with `preset` (alpha 1, always included).

    The summary has `sigma_sweep`'s columns with `alpha` in place of `sigma` (and `sigma` the
    endpoint's): mean bpp, PSNR and MSE, `mse_ratio` to the decode, `swd`/`swd_std` and
    `swd_floor`. Outputs are rounded to 8 bits, as a decoder writes them. `consistency` (JPEG):
    the endpoint is projected into its file's cells, as in `sigma_sweep` (the cells are convex, so
    every interpolant stays in them)."""
    if sigma <= 0:
        raise PerceptError(f"the interpolation's endpoint needs sigma > 0, got {sigma}")
    if any(not 0 <= a <= 1 for a in alphas):
        raise PerceptError(f"alphas must lie in [0, 1], got {list(alphas)}")
    alphas = sorted({0.0, 1.0, *map(float, alphas)})
    names, originals, decoded, bpps, projections = decode_all(images, codec, consistency)
    enhanced = _enhance_all(decoded, denoiser, sigma, preset, seed, projections=projections)
    opts = {"seeds": swd_seeds, "patches_per_image": patches_per_image}
    floor = swd(originals, originals, **opts)
    rows, summary = [], []
    for alpha in tqdm(alphas, desc="interpolation", disable=not progress):
        outputs = [quantize(interpolate(d, e, alpha)) for d, e in zip(decoded, enhanced)]
        for i, y in enumerate(outputs):
            rows.append(_image_row(names[i], originals[i], y, bpps[i], alpha=alpha))
        summary.append({"alpha": alpha, **_realism(originals, decoded, outputs, 0, seed, opts)})
    per_image, table = _tables(rows, summary, "alpha", 0.0, floor)
    table["sigma"] = float(sigma)
    return per_image, table


def traversals(sigma_table: pd.DataFrame, interp_table: pd.DataFrame) -> pd.DataFrame:
    """One tidy table of both traversals for a plot: `path` is "sigma" or "interpolation",
    `step` the sigma or alpha of each point, with the shared columns (mse_ratio, psnr, swd, ...)."""
    a = sigma_table.assign(path="sigma", step=sigma_table["sigma"])
    b = interp_table.assign(path="interpolation", step=interp_table["alpha"])
    return pd.concat([a, b.drop(columns=["sigma"])], ignore_index=True)


def realism_at(table: pd.DataFrame, mse_ratio: float, column: str = "swd") -> float:
    """`column` linearly interpolated at an MSE ratio along a traversal (sorted by mse_ratio);
    NaN outside the range it covers."""
    t = table.sort_values("mse_ratio")
    x, y = t["mse_ratio"].to_numpy(), t[column].to_numpy()
    if len(x) == 0 or mse_ratio < x[0] or mse_ratio > x[-1]:
        return float("nan")
    return float(np.interp(mse_ratio, x, y))
