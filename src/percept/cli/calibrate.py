"""`percept calibrate`: measure the sigma of paper 1's rule for one setting and store it in the table."""

from __future__ import annotations

import argparse

from percept.codecs import get_codec
from percept.codecs.jpeg_consistency import PLANES
from percept.enhancer.calibrate import calibrate_sigma, calibration_images
from percept.enhancer.pipeline import Enhancer
from percept.enhancer.presets import PRESETS, EnhancerConfig
from percept.enhancer.table import calibration_key, model_sha256, store_sigma

TOL = 0.02  # the calibrated ratio is within 2% of the target (the shipped JPEG entries' setting)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="percept calibrate",
        description="Find the sigma at which the enhanced MSE is --mse-ratio times the decoded MSE "
        "(paper 1, eq. 14) on imagenet-sample val crops (never Kodak), and store it in the "
        "package's calibration table under the setting's key.",
    )
    p.add_argument("--codec", required=True)
    p.add_argument("--quality", type=int, required=True)
    p.add_argument("--prior", required=True, help="zoo name or weights path (the table's key)")
    p.add_argument("--preset", default="medium", choices=tuple(PRESETS))
    p.add_argument("--steps", type=int, default=None, help="solver steps (default: the preset's)")
    p.add_argument("--zeta", type=float, default=None, help="DPS weight (preset slow)")
    p.add_argument("--mse-ratio", type=float, default=2.0)
    p.add_argument(
        "--images", type=int, default=16, help="imagenet-sample val images (256x256 crops)"
    )
    p.add_argument(
        "--size", type=int, default=256, help="side of the top-left crops (the shipped JPEG "
        "entries used 128)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--consistency",
        action="store_true",
        help="JPEG: calibrate with the consistency projection (its own table entry)",
    )
    args = p.parse_args(argv[1:])
    config = EnhancerConfig(args.preset, args.steps, args.zeta, args.consistency)
    enhancer = Enhancer.from_pretrained(args.prior, config)
    images = calibration_images(args.images, args.size)
    codec = get_codec(args.codec, args.quality)
    sigma, history = calibrate_sigma(
        codec,
        enhancer.denoiser,
        images,
        config,
        args.mse_ratio,
        seed=args.seed,
        tol=TOL,
        progress=True,
        return_history=True,
    )
    ratio = min(history, key=lambda h: abs(h[1] - args.mse_ratio))[1]
    info = {
        "mse_ratio_target": args.mse_ratio,
        "mse_ratio": ratio,
        "images": len(images),
        "set": f"imagenet-sample val, top-left {args.size}x{args.size}",
        "seed": args.seed,
        "tol": TOL,
        "model_sha256": model_sha256(args.prior),
    }
    if config.consistency:
        info["projection"] = PLANES
    store_sigma(args.codec, args.quality, args.prior, config, sigma, info)
    key = calibration_key(args.codec, args.quality, args.prior, config)
    print(f"{key}: sigma {sigma:.4f} (ratio {ratio:.3f})")
    return 0
