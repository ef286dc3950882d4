"""One-step denoising quality of the project's prior on Kodak, beside classical denoisers.

    python benchmarks/prior_quality.py --model runs/prior-s --images 24 --out out/prior_quality.json

Protocol: the 256x256 center crop of each Kodak image (never used in training), Gaussian noise of
std sigma in [-1,1] units (sigma/2 in [0,1] units) from a fixed seed per image and sigma, the same
noise for every method. PSNR in [0,1] units (8-bit peak), per image, averaged:
  noisy   the noisy input as it is (not clipped): 20 log10(2 / sigma) up to sampling noise;
  blur    Gaussian blur with the radius that is best on average for that sigma (an oracle choice,
          so a generous baseline), searched on a grid;
  bm3d    colour BM3D (`bm3d.bm3d_rgb`, Dabov et al. 2007) given the true noise std in [0,1] units;
  prior   one call of the model, D(x, sigma), clipped to the image range.
`--model` is a zoo name, a .safetensors file with its JSON sidecar, or a training run directory
(EMA weights of its latest checkpoint). BM3D costs ~5-10 s per crop on 2 cores: `--bm3d-images`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

SIGMAS = (0.05, 0.1, 0.2, 0.4)
BLUR_RADII = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0)


def kodak_crops(n: int, size: int) -> tuple[np.ndarray, list[str]]:
    """The center size x size crops of the first n Kodak images, float64 [N,H,W,3] in [0,1]."""
    from percept.core.images import load_image
    from percept.errors import PerceptError
    from percept.hub.data import kodak_paths

    paths = kodak_paths()[:n]
    if not paths:
        raise PerceptError("Kodak not found: set PERCEPT_DATA to the folder that holds kodak/")
    crops = []
    for p in paths:
        img = load_image(p)[0][0].permute(1, 2, 0).double().numpy()
        h, w, _ = img.shape
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(img[top : top + size, left : left + size])
    return np.stack(crops), [p.name for p in paths]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def noisy_versions(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """clean + (sigma/2) * eps in [0,1] units; one fixed generator per (seed, sigma, image)."""
    out = np.empty_like(clean)
    for i, img in enumerate(clean):
        rng = np.random.default_rng([seed, int(round(sigma * 1000)), i])
        out[i] = img + (sigma / 2) * rng.standard_normal(img.shape)
    return out


def best_blur(clean: np.ndarray, noisy: np.ndarray) -> tuple[float, float]:
    """(mean PSNR, radius) of the Gaussian blur radius that is best on average over the set."""
    best = (-np.inf, 0.0)
    for r in BLUR_RADII:
        scores = [
            psnr(np.clip(gaussian_filter(n, (r, r, 0)), 0, 1), c) for c, n in zip(clean, noisy)
        ]
        best = max(best, (float(np.mean(scores)), r))
    return best


@torch.no_grad()
def prior_psnr(model, clean: np.ndarray, noisy: np.ndarray, sigma: float) -> float:
    scores = []
    for c, n in zip(clean, noisy):
        x = torch.from_numpy(n * 2 - 1).float().permute(2, 0, 1)[None]  # [0,1] -> [-1,1] units
        d = model(x, torch.tensor(sigma))[0].permute(1, 2, 0).double().numpy()
        scores.append(psnr(np.clip((d + 1) / 2, 0, 1), c))
    return float(np.mean(scores))


def bm3d_psnr(
    clean: np.ndarray, noisy: np.ndarray, sigma: float, keys: list[str], cache: dict | None
) -> float:
    """Mean PSNR of colour BM3D over the set. BM3D is deterministic, so with a `cache` (key: image,
    index, crop, sigma and seed, which fix the noise) a crop it has already denoised is not redone."""
    import bm3d

    scores = []
    for c, n, key in zip(clean, noisy, keys):
        if cache is None or key not in cache:
            value = psnr(np.clip(bm3d.bm3d_rgb(n, sigma / 2), 0, 1), c)
            if cache is None:
                scores.append(value)
                continue
            cache[key] = value
        scores.append(cache[key])
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", required=True, help="zoo name, .safetensors path, or run directory"
    )
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images")
    parser.add_argument(
        "--bm3d-images", type=int, default=None, help="BM3D on the first K of them (0: skip)"
    )
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument(
        "--sigmas", type=float, nargs="+", default=list(SIGMAS), help="noise levels ([-1,1] units)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/prior_quality.json"))
    parser.add_argument(
        "--bm3d-cache",
        type=Path,
        default=Path("out/bm3d_cache.json"),
        help="per-crop BM3D PSNRs kept between runs (BM3D does not depend on the model); 'none': off",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="store the result in the zoo card of --model (a zoo name)",
    )
    parser.add_argument(
        "--record-key", default="kodak_benchmark", help="card key (kodak_benchmark_bm3d_all: ...)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from percept.core.provenance import environment
    from percept.hub.zoo import load_denoiser

    model = load_denoiser(args.model)
    clean, names = kodak_crops(args.images, args.crop)
    n_bm3d = len(clean) if args.bm3d_images is None else min(args.bm3d_images, len(clean))
    results, timings = {}, {"prior": 0.0, "bm3d": 0.0}
    use_cache = str(args.bm3d_cache) != "none"
    cache = (
        json.loads(args.bm3d_cache.read_text())
        if use_cache and args.bm3d_cache.is_file()
        else ({} if use_cache else None)
    )
    for sigma in tqdm(args.sigmas, desc="noise levels"):
        noisy = noisy_versions(clean, sigma, args.seed)
        blur, radius = best_blur(clean, noisy)
        t = time.perf_counter()
        row = {
            "noisy": float(np.mean([psnr(n, c) for c, n in zip(clean, noisy)])),
            "blur": blur,
            "blur_radius": radius,
        }
        row["prior"] = prior_psnr(model, clean, noisy, sigma)
        timings["prior"] += time.perf_counter() - t
        if n_bm3d:
            t = time.perf_counter()
            keys = [f"{nm}|{i}|crop{args.crop}|sigma{sigma:g}|seed{args.seed}"
                    for i, nm in enumerate(names[:n_bm3d])]  # fmt: skip
            row["bm3d"] = bm3d_psnr(clean[:n_bm3d], noisy[:n_bm3d], sigma, keys, cache)
            if cache is not None:
                args.bm3d_cache.parent.mkdir(parents=True, exist_ok=True)
                args.bm3d_cache.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
            row["prior_on_bm3d_images"] = prior_psnr(model, clean[:n_bm3d], noisy[:n_bm3d], sigma)
            timings["bm3d"] += time.perf_counter() - t
        results[f"{sigma:g}"] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()
        }

    print(f"one-step denoising PSNR (dB) on {len(clean)} Kodak {args.crop}x{args.crop} crops"
          + (f" (BM3D on the first {n_bm3d})" if n_bm3d else ""))  # fmt: skip
    cols = ["noisy", "blur", "prior"] + (["bm3d", "prior_on_bm3d_images"] if n_bm3d else [])
    print("sigma([-1,1]) " + " ".join(f"{c:>20}" for c in cols))
    for sigma, row in results.items():
        print(f"{sigma:>13} " + " ".join(f"{row[c]:>20.2f}" for c in cols))
    result = {
        "name": "prior_quality",
        "description": "one-step denoising PSNR on Kodak center crops (see benchmarks/prior_quality.py)",
        "model": str(args.model),
        "images": names, "crop": args.crop, "seed": args.seed, "bm3d_images": n_bm3d,
        "results": results, "seconds": {k: round(v, 1) for k, v in timings.items()},
        "command": " ".join(sys.argv), "environment": environment(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.record:
        from percept.hub.zoo import record_benchmark

        compact = {
            k: result[k]
            for k in ("description", "crop", "seed", "bm3d_images", "results", "command")
        }
        record_benchmark(args.model, args.record_key, {**compact, "images": len(names)})
        print(f"recorded in the zoo card of {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
