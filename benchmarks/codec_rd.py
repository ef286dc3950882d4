"""Rate-distortion of the project's learned codec on Kodak, against Pillow's JPEG, WebP and AVIF.

    python benchmarks/codec_rd.py --weights runs/q1/codec-hyperprior-q1.safetensors ... --out out/codec_rd.json

Every bpp comes from real bytes: 8 * len(bytes) / (H * W), where bytes is the whole Pillow file for
JPEG/WebP/AVIF and the concatenated CompressAI strings (the entropy-coded y and z) for the learned
codec. PSNR is computed per image on 8-bit RGB and averaged over the 24 images, bpp likewise (the
convention of CompressAI's results/image/kodak/*.json). BD-rate (Bjontegaard delta rate, pchip and
akima interpolation of log-rate over PSNR on the overlapping PSNR interval) is reported against the
JPEG curve measured here. CompressAI's PUBLISHED Kodak figures for bmshj2018-hyperprior and
mbt2018-mean (GPU-trained, N=128/M=192 at qualities 1-5) are printed beside them, labelled as
published, with their BD-rate against CompressAI's own published Pillow JPEG curve.
With a single learned rate there is no curve: the bpp saving at equal PSNR is reported instead.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

# InterDigitalInc/CompressAI results/image/kodak/: compressai-bmshj2018-hyperprior_mse_cuda.json and
# jpeg.json (commit 3d3c9bbd92989b1cf19e122281161f7aac8ee769), compressai-mbt2018-mean_mse_cuda.json
# (commit 128f00397509b9882aaaeea49f43f1714da083b4). PSNR (RGB) and bpp, qualities 1..8 / JPEG 5..95.
PUBLISHED = {
    "bmshj2018-hyperprior (published)": {
        "bpp": [0.131293, 0.208893, 0.319858, 0.478356, 0.668688, 0.938826, 1.259172, 1.660224],
        "psnr": [27.581537, 29.196703, 30.972162, 32.838183, 34.526264, 36.743348, 38.583848, 40.556866],
    },
    "mbt2018-mean (published)": {
        "bpp": [0.123922, 0.197981, 0.307244, 0.460612, 0.661665, 0.914405, 1.234209, 1.619090],
        "psnr": [27.699473, 29.358818, 31.128916, 32.950675, 34.968297, 36.911095, 38.837514, 40.633313],
    },
    "JPEG, Pillow 7.1.2 (published)": {
        "bpp": [0.221153, 0.326614, 0.423126, 0.508386, 0.587866, 0.660127, 0.728946, 0.786027, 0.849719,
                0.906001, 0.964380, 1.037212, 1.127396, 1.239846, 1.368827, 1.571807, 1.858816, 2.350199,
                3.401340],
        "psnr": [23.779895, 26.577230, 28.042246, 29.041809, 29.784730, 30.378313, 30.903165, 31.307827,
                 31.704845, 32.058653, 32.399296, 32.789916, 33.234742, 33.792594, 34.394295, 35.239001,
                 36.328865, 37.912125, 40.556657],
    },
}  # fmt: skip

QUALITIES = {
    "jpeg": list(range(5, 100, 5)),
    "webp": list(range(5, 100, 10)),
    "avif": list(range(10, 100, 10)),
}
FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf


def pillow_curve(images: list[np.ndarray], codec: str, qualities: list[int]) -> dict:
    """Mean bpp and PSNR per quality of a Pillow codec; bytes are the whole encoded file."""
    curve = {"quality": [], "bpp": [], "psnr": []}
    for q in tqdm(qualities, desc=codec, leave=False):
        bpps, psnrs = [], []
        for arr in images:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format=FORMATS[codec], quality=q)
            with Image.open(io.BytesIO(buf.getvalue())) as img:
                rec = np.asarray(img.convert("RGB"))
            bpps.append(8 * buf.getbuffer().nbytes / (arr.shape[0] * arr.shape[1]))
            psnrs.append(psnr_uint8(arr, rec))
        curve["quality"].append(q)
        curve["bpp"].append(float(np.mean(bpps)))
        curve["psnr"].append(float(np.mean(psnrs)))
    return curve


def learned_curve(images: list[np.ndarray], weights: list[Path]) -> dict:
    """Mean bpp (real compress() bytes) and PSNR (8-bit output) per trained codec file."""
    import torch

    from percept.codecs.project import load_trained_codec

    curve = {"quality": [], "bpp": [], "psnr": [], "weights": [], "steps_trained": []}
    for path in weights:
        model, config = load_trained_codec(path)
        bpps, psnrs = [], []
        for arr in tqdm(images, desc=path.name, leave=False):
            if arr.shape[0] % 64 or arr.shape[1] % 64:
                raise SystemExit(f"image size {arr.shape[:2]} is not a multiple of 64")
            x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                enc = model.compress(x)
                x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
            nbytes = sum(len(s) for group in enc["strings"] for s in group)
            rec = x_hat[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
            bpps.append(8 * nbytes / (arr.shape[0] * arr.shape[1]))
            psnrs.append(psnr_uint8(arr, rec))
        curve["quality"].append(config["quality"])
        curve["bpp"].append(float(np.mean(bpps)))
        curve["psnr"].append(float(np.mean(psnrs)))
        curve["weights"].append(str(path))
        curve["steps_trained"].append(config.get("steps_trained"))
    return curve


def bd_rate(anchor: dict, test: dict, method: str = "pchip") -> float | None:
    """Bjontegaard delta rate in percent (negative: fewer bits than the anchor at equal PSNR)."""
    if len(test["bpp"]) < 2:
        return None
    try:
        from percept.metrics import bd_rate as project_bd_rate
    except ImportError:
        project_bd_rate = None
    if project_bd_rate is not None:
        return float(
            project_bd_rate(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"], method=method)
        )
    from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

    interp = {"pchip": PchipInterpolator, "akima": Akima1DInterpolator}[method]

    def log_rate(curve):
        order = np.argsort(curve["psnr"])
        return np.asarray(curve["psnr"])[order], np.log10(np.asarray(curve["bpp"])[order])

    (pa, ra), (pt, rt) = log_rate(anchor), log_rate(test)
    lo, hi = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    if lo >= hi:
        return None
    fa, ft = interp(pa, ra), interp(pt, rt)
    diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float((10**diff - 1) * 100)


def saving_at_equal_psnr(anchor: dict, bpp: float, psnr: float) -> float | None:
    """Percent bpp difference of one point against the anchor's pchip curve at the same PSNR."""
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(anchor["psnr"])
    p, r = np.asarray(anchor["psnr"])[order], np.log10(np.asarray(anchor["bpp"])[order])
    if not p.min() <= psnr <= p.max():
        return None
    return float((bpp / 10 ** PchipInterpolator(p, r)(psnr) - 1) * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--weights", nargs="*", type=Path, default=[], help="trained codec files (one per rate)"
    )
    parser.add_argument("--images", type=int, default=24, help="use the first N Kodak images")
    parser.add_argument("--codecs", default="jpeg,webp,avif", help="Pillow codecs to measure")
    parser.add_argument("--out", type=Path, default=Path("out/codec_rd.json"))
    parser.add_argument(
        "--record",
        nargs="*",
        default=[],
        metavar="ZOO_NAME",
        help="store the curves and BD-rates in these zoo entries' cards (the shipped codec files)",
    )
    args = parser.parse_args(argv)

    from percept.core.provenance import environment
    from percept.hub.data import kodak_paths

    paths = kodak_paths()[: args.images]
    if not paths:
        raise SystemExit("Kodak not found: set PERCEPT_DATA to a folder with kodak/kodim01.png ...")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    curves = {c: pillow_curve(images, c, QUALITIES[c]) for c in args.codecs.split(",") if c}
    if args.weights:
        curves["percept-hyperprior"] = learned_curve(images, args.weights)
    anchor = curves["jpeg"]
    rows = []
    for name, curve in {**curves, **PUBLISHED}.items():
        published = "(published)" in name
        ref = PUBLISHED["JPEG, Pillow 7.1.2 (published)"] if published else anchor
        row = {
            "codec": name,
            "anchor": "published Pillow JPEG" if published else "Pillow JPEG measured here",
        }
        for method in ("pchip", "akima"):
            row[f"bd_rate_{method}"] = None if curve is ref else bd_rate(ref, curve, method)
        if len(curve["bpp"]) == 1:
            row["saving_at_equal_psnr"] = saving_at_equal_psnr(
                ref, curve["bpp"][0], curve["psnr"][0]
            )
        rows.append(row)
    result = {
        "name": "codec_rd",
        "description": "Kodak RD: project codec vs Pillow codecs; published CompressAI figures beside",
        "images": [p.name for p in paths],
        "bpp_source": "real bytes: whole Pillow files; CompressAI strings (y and z) for the learned codec",
        "results": curves,
        "published": PUBLISHED,
        "bd_rate_vs_jpeg": rows,
        "environment": environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, curve in curves.items():
        pts = ", ".join(f"{b:.3f}/{p:.2f}" for b, p in zip(curve["bpp"], curve["psnr"]))
        print(f"{name:>34}  bpp/PSNR: {pts}")
    for row in rows:
        fmt = {
            k: (f"{v:+.1f}%" if isinstance(v, float) else v) for k, v in row.items() if k != "codec"
        }
        print(f"{row['codec']:>34}  {fmt}")
    print(f"wrote {args.out}")
    if args.record:
        from percept.hub.zoo import record_benchmark

        compact = {
            k: result[k] for k in ("description", "bpp_source", "results", "bd_rate_vs_jpeg")
        }
        compact["images"] = len(result["images"])
        compact["command"] = " ".join(sys.argv)
        for name in args.record:
            record_benchmark(name, "kodak_rd", compact)
        print(f"recorded in the zoo cards of {', '.join(args.record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
