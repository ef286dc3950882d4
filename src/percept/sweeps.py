"""The sigma sweep of paper 1 (section 4.4, Fig. 4): distortion and realism against the noise level.

For one codec setting, every image is encoded (real bytes), decoded, noised to sigma and denoised by
the prior (`percept.enhancer.enhance`). Per image the sweep records PSNR and the MSE ratio to the plain
decode (the paper's rule: the recommended sigma roughly doubles the MSE, eq. 3 and 14); per sigma it
records the realism of the whole set (sliced Wasserstein distance on Laplacian-pyramid patches,
normalised by the reference set, with its spread over patch seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from percept.container import decode_file, encode_image
from percept.enhancer import enhance
from percept.images import quantize
from percept.metrics import mse, psnr, swd


def sigma_sweep(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    sigmas: Sequence[float],
    *,
    preset: str = "medium",
    seed: int = 0,
    swd_seeds: Sequence[int] = (0, 1, 2, 3),
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-image rows, per-sigma summary). sigma 0, the plain decode, is always included.

    The summary's `mse_ratio` is mean MSE at sigma over mean MSE of the decode (a set-level ratio,
    as `calibrate_sigma` uses), and `swd`/`swd_std` the realism distance of the enhanced set to the
    originals (lower is better; compare with `swd_floor`, the distance of the originals to
    themselves with fresh patch samples).
    """
    sigmas = sorted({0.0, *map(float, sigmas)})
    names = list(images)
    originals = [images[n] for n in names]
    decoded, bpps = [], []
    for x in originals:
        x_hat, record = decode_file(encode_image(x, codec))
        decoded.append(x_hat)
        bpps.append(record.bpp)
    floor = swd(originals, originals, seeds=swd_seeds)
    rows, summary = [], []
    for sigma in tqdm(list(sigmas), desc="sigma sweep", disable=not progress):
        outputs = []
        for i, x_hat in enumerate(decoded):
            if sigma == 0:
                y = x_hat
            else:
                gen = torch.Generator().manual_seed(seed + i)
                y = quantize(enhance(x_hat, denoiser, float(sigma), preset, generator=gen))
            outputs.append(y)
            rows.append(
                {
                    "image": names[i],
                    "sigma": float(sigma),
                    "bpp": bpps[i],
                    "psnr": float(psnr(originals[i], y)),
                    "mse": float(mse(originals[i], y)),
                }
            )
        realism = swd(originals, outputs, seeds=swd_seeds)
        summary.append({"sigma": float(sigma), "swd": realism.mean, "swd_std": realism.std})
    per_image = pd.DataFrame(rows)
    table = per_image.groupby("sigma").agg(
        bpp=("bpp", "mean"), psnr=("psnr", "mean"), mse=("mse", "mean")
    )
    table = table.reset_index().merge(pd.DataFrame(summary), on="sigma")
    decode_mse = per_image.loc[per_image["sigma"] == 0.0, "mse"].mean()
    table["mse_ratio"] = table["mse"] / decode_mse
    table["swd_floor"] = floor.mean
    return per_image, table
