"""Rate-distortion sweeps over real bitstreams: every point is a file that was written and read back.

bpp counts the whole percept container (header, parameters, payload, checksum), as `percept encode`
writes it, so the figures are what a user's file would cost, not an idealised payload size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs import get_codec
from percept.codecs.container import decode_file, encode_image
from percept.core.images import load_image
from percept.errors import PerceptError
from percept.hub.data import SKIMAGE_PHOTOS, kodak_dir, kodak_paths, skimage_photo
from percept.metrics import bd_rate, psnr


def evaluation_images(images: int | Sequence[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Images for a sweep and a sentence saying where they came from.

    `images` is a count (the first N of Kodak, kodim01 onwards) or a list of Kodak names
    ("kodim23" or "kodim23.png"). Without Kodak (PERCEPT_DATA unset or without kodak/) the same
    number of scikit-image photos is used instead, and the sentence says so: numbers on them are not
    comparable with published Kodak tables.
    """
    if isinstance(images, int):
        if images < 1:
            raise PerceptError(f"images must be at least 1, got {images}")
        wanted: list[str] | None = None
        count = images
    else:
        wanted = [n if n.endswith(".png") else f"{n}.png" for n in images]
        count = len(wanted)
    paths = kodak_paths()
    if paths:
        by_name = {p.name: p for p in paths}
        names = wanted if wanted is not None else sorted(by_name)[:count]
        absent = [n for n in names if n not in by_name]
        if absent:
            raise PerceptError(f"not in {kodak_dir()}: {', '.join(absent)}")
        loaded = {n.removesuffix(".png"): load_image(by_name[n])[0] for n in names}
        return loaded, f"Kodak images from {kodak_dir()}: {', '.join(loaded)}."
    if count > len(SKIMAGE_PHOTOS):
        raise PerceptError(
            f"Kodak not found and only {len(SKIMAGE_PHOTOS)} scikit-image photos exist: "
            "set PERCEPT_DATA to a folder with kodak/ or ask for fewer images"
        )
    names = list(SKIMAGE_PHOTOS[:count])
    loaded = {n: skimage_photo(n) for n in names}
    return loaded, (
        "Kodak not found (set PERCEPT_DATA to a folder holding kodak/): using the scikit-image photos "
        f"{', '.join(names)} instead; these numbers are not comparable with published Kodak tables."
    )


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
