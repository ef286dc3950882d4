"""Rate-distortion sweeps over real bitstreams: every point is a file that was written and read back.

bpp counts the whole percept container (header, parameters, payload, checksum), as `percept encode`
writes it, so the figures are what a user's file would cost, not an idealised payload size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs import get_codec
from percept.codecs.container import decode_file, encode_image
from percept.errors import PerceptError
from percept.metrics import bd_rate, psnr


def rd_sweep(
    images: Mapping[str, torch.Tensor], codecs: Mapping[str, Sequence[int]]
) -> pd.DataFrame:
    """Encode every image with every codec and quality into a percept file, decode it, measure.

    Returns one row per (image, codec, quality) with the file size in bytes, bpp = 8 * bytes / (H * W)
    and PSNR in dB on the 8-bit grid (`percept.metrics.psnr`).
    """

    jobs = [
        (name, codec, q)
        for name in images
        for codec, qualities in codecs.items()
        for q in qualities
    ]
    rows = []
    for name, codec_name, quality in tqdm(jobs, desc="rd sweep", unit="file"):
        x = images[name]
        data = encode_image(x, get_codec(codec_name, quality))
        y, _ = decode_file(data)
        height, width = x.shape[-2:]
        rows.append(
            {
                "image": name,
                "codec": codec_name,
                "quality": quality,
                "bytes": len(data),
                "bpp": 8 * len(data) / (height * width),
                "psnr": float(psnr(x, y)[0]),
            }
        )
    return pd.DataFrame(rows)


def rd_curves(df: pd.DataFrame) -> pd.DataFrame:
    """One point per (codec, quality): bpp and PSNR averaged over the images.

    Averaging per quality setting, not per target rate, is CompressAI's convention for its
    published Kodak curves, so these points are comparable with those tables.
    """
    curves = df.groupby(["codec", "quality"], as_index=False)[["bpp", "psnr"]].mean()
    return curves.sort_values(["codec", "bpp"], ignore_index=True)


def bd_rates(curves: pd.DataFrame, anchor: str) -> pd.Series:
    """BD-rate (%) of every codec against `anchor` at equal PSNR; negative = fewer bits.

    NaN where the two curves' PSNR ranges do not overlap (`percept.metrics.bd_rate`).
    """

    if anchor not in set(curves["codec"]):
        raise PerceptError(f"anchor codec {anchor!r} is not in the sweep: add it to the codecs")
    ref = curves[curves["codec"] == anchor]
    out = {}
    for codec, test in curves.groupby("codec", sort=False):
        if codec != anchor:
            out[codec] = bd_rate(ref["bpp"], ref["psnr"], test["bpp"], test["psnr"])
    return pd.Series(out, name=f"BD-rate vs {anchor} (%)").round(1)


def curves_at(
    curves: pd.DataFrame, value: float, along: str = "psnr", read: str = "bpp"
) -> pd.Series:
    """Every codec's curve read at one point: `read` linearly interpolated where `along` equals `value`.

    With the defaults, the rate each codec needs for a PSNR; with along="bpp", read="psnr", the PSNR
    each reaches at a rate. NaN for a codec whose points do not cover `value` (no extrapolation).
    """
    out = {}
    for codec, curve in curves.groupby("codec", sort=False):
        curve = curve.sort_values(along)
        x, y = curve[along].to_numpy(float), curve[read].to_numpy(float)
        inside = len(x) > 0 and x[0] <= value <= x[-1]
        out[codec] = float(np.interp(value, x, y)) if inside else float("nan")
    return pd.Series(out, name=f"{read} at {along} {value:g}")
