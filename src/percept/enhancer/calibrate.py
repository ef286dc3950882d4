"""Choose sigma from the perception-distortion bound: the noise level at which the MSE doubles.

Blau and Michaeli's bound (paper eq. 3) says a perfect-realism decoder needs at most twice the MSE
of the MSE-optimal one; section 3.1 (eq. 14) picks sigma where MSE(enhanced, x) reaches
`mse_ratio` * MSE(decoded, x). `calibrate_sigma` finds that sigma by bisection in log(sigma) on a
calibration set, with the same noise seeds at every trial (common random numbers), so the ratio is
a deterministic, nearly monotone function of sigma.

Calibrated values are data: `src/percept/weights/calibration.json` maps
"codec/q<quality>/<prior>/<preset>" to the sigma and how it was obtained, including the sha256 of
the model's weights and, for the project's learned codecs, of the codec's weights: an entry measured
on other weights than those now published under either name is refused as stale (recalibrate),
never applied silently. `store_sigma` writes an
entry, `lookup_sigma` reads one (and says which command to run when there is none); the enhancer's
`sigma="auto"` uses it. Never calibrate on Kodak (evaluation only): `main` uses imagenet-sample val.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from percept.errors import PerceptError


class CalibrationMissing(PerceptError):
    """No calibrated sigma for this (codec, quality, prior, preset)."""


class TargetOutOfReach(PerceptError):
    """The MSE ratio stays below the target even at the largest sigma searched."""


def table_path() -> Path:
    return Path(str(resources.files("percept") / "weights" / "calibration.json"))


def calibration_key(codec: str, quality: int | None, prior: str, preset: str) -> str:
    return f"{codec}/q{quality}/{prior}/{preset}"


CONSISTENCY_SUFFIX = "+consistency"


def table_preset(preset: str, consistency: bool = False) -> str:
    """The preset part of a table key: `medium`, or `medium+consistency` for the sigma calibrated
    with the JPEG consistency projection (it lowers the MSE, so the rule lands at a larger sigma)."""
    return preset + CONSISTENCY_SUFFIX if consistency else preset


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"version": 1, "entries": {}}


def store_sigma(
    codec: str,
    quality: int | None,
    prior: str,
    preset: str,
    sigma: float,
    info: dict | None = None,
    *,
    path: Path | None = None,
) -> dict:
    """Record a calibrated sigma (and `info`: ratio reached, images, seed, ...) in the table."""
    path = Path(path) if path is not None else table_path()
    table = _read(path)
    entry = {"sigma": float(sigma), **(info or {})}
    codec_hash = codec_sha256(codec, quality)  # which codec weights it was measured on
    if codec_hash:
        entry.setdefault("codec_sha256", codec_hash)
    table["entries"][calibration_key(codec, quality, prior, preset)] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(table, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the table ships inside the package
    os.replace(tmp, path)
    return entry


def model_sha256(prior: str) -> str | None:
    """The recorded sha256 of a zoo name or weights file (None for other kinds of prior)."""
    from percept.hub.zoo import recorded_sha256

    try:
        return recorded_sha256(prior)
    except (OSError, ValueError):
        return None


def codec_sha256(codec: str, quality: int | None) -> str | None:
    """The recorded sha256 of a project codec's weights at `quality` (None for Pillow/external
    codecs, whose behaviour is fixed by their name and quality)."""
    from percept.codecs.project import PROJECT_CODECS
    from percept.hub.zoo import recorded_sha256

    name = PROJECT_CODECS.get(codec, {}).get(quality)
    if name is None:
        return None
    try:
        return recorded_sha256(name)
    except (OSError, ValueError):
        return None


def lookup_sigma(
    codec: str, quality: int | None, prior: str, preset: str, *, path: Path | None = None
) -> float:
    """The calibrated sigma, or CalibrationMissing saying the command that makes it (also when the
    entry was calibrated on other weights than those `prior` names now)."""
    table = _read(Path(path) if path is not None else table_path())
    key = calibration_key(codec, quality, prior, preset)
    base, projected = preset.removesuffix(CONSISTENCY_SUFFIX), preset.endswith(CONSISTENCY_SUFFIX)
    command = (
        f"`python -m percept.enhancer.calibrate --codec {codec} --quality {quality} --prior {prior} "
        f"--preset {base}{' --consistency' if projected else ''}`"
    )
    if key not in table["entries"]:
        raise CalibrationMissing(
            f"no calibrated sigma for {key}: run {command} or pass --sigma VALUE"
        )
    entry = table["entries"][key]
    recorded, current = entry.get("model_sha256"), model_sha256(prior)
    if recorded and current and recorded != current:
        raise CalibrationMissing(
            f"the calibrated sigma for {key} was measured on other weights (sha256 "
            f"{recorded[:12]}..., now {current[:12]}...): recalibrate with {command} or pass "
            "--sigma VALUE"
        )
    recorded, current = entry.get("codec_sha256"), codec_sha256(codec, quality)
    if current and recorded != current:
        measured = (
            f"codec weights sha256 {recorded[:12]}..." if recorded else "unrecorded codec weights"
        )
        raise CalibrationMissing(
            f"the calibrated sigma for {key} was measured on other {codec} weights ({measured}, "
            f"now {current[:12]}...): recalibrate with {command} or pass --sigma VALUE"
        )
    if projected:
        from percept.codecs.jpeg_consistency import PLANES

        if entry.get("projection") != PLANES:
            raise CalibrationMissing(
                f"the calibrated sigma for {key} was measured with an earlier consistency "
                f"projection ({entry.get('projection') or 'luma cells only'}; now {PLANES}): "
                f"recalibrate with {command} or pass --sigma VALUE"
            )
    return float(entry["sigma"])


def _sse(a: Tensor, b: Tensor) -> float:
    return float(torch.sum((a.double() - b.double()) ** 2))


def decode_pairs(codec, images: Iterable[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(source, decoded) for each image [1,3,H,W] through the codec's real bytes."""
    return [(x, codec.decode(codec.encode(x))) for x in images]


def decode_projected(codec, images: Iterable[Tensor]) -> tuple[list, list]:
    """(pairs as `decode_pairs`, each file's JPEG consistency projection) through real files."""
    from percept.eval.sweeps import _decode_all

    _, originals, decoded, _, projections = _decode_all(dict(enumerate(images)), codec, True)
    return list(zip(originals, decoded)), projections


def bisect_log_sigma(
    ratio_at: Callable[[float], float],
    target: float,
    *,
    lo: float = 1e-3,
    hi: float = 0.5,
    hi_max: float = 80.0,
    tol: float = 0.02,
    max_iter: int = 20,
) -> tuple[float, list[tuple[float, float]]]:
    """Bisection in log(sigma) for ratio_at(sigma) == target; returns (sigma, [(sigma, ratio)...]).

    Stops when the ratio is within tol * target, or after max_iter evaluations. `hi` is doubled
    until the ratio exceeds the target (up to hi_max); a target out of reach is an error.
    """
    history: list[tuple[float, float]] = []

    def f(s: float) -> float:
        history.append((s, ratio_at(s)))
        return history[-1][1]

    r_hi = f(hi)
    while r_hi < target:
        if hi >= hi_max:
            raise TargetOutOfReach(
                f"MSE ratio {r_hi:.3f} < {target} even at sigma {hi:g}: the target is out of reach"
            )
        lo, hi = hi, min(2 * hi, hi_max)
        r_hi = f(hi)
    for _ in range(max_iter):
        best = min(history, key=lambda h: abs(h[1] - target))
        if abs(best[1] - target) <= tol * target:
            break
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    best = min(history, key=lambda h: abs(h[1] - target))
    return best[0], history


def calibrate_sigma(
    codec,
    denoiser,
    images: Sequence,
    preset: str = "medium",
    mse_ratio: float = 2.0,
    *,
    seed: int = 0,
    tol: float = 0.02,
    max_iter: int = 20,
    steps: int | None = None,
    progress: bool = False,
    return_history: bool = False,
    consistency: bool = False,
    **enhance_kwargs,
):
    """The sigma where MSE(enhance(decoded), source) = mse_ratio * MSE(decoded, source) (eq. 3, 14).

    codec: anything with encode/decode (real bytes), applied to each image [1,3,H,W] in `images`;
    or None, and `images` is a sequence of (source, decoded) pairs, each [B,C,H,W] (batches are
    fine). Squared errors are pooled over all pixels of the set. `consistency` (JPEG, needs a
    codec): every enhancement uses its file's consistency projection (`enhance(project=...)`).
    Every trial draws image j's noise from the j-th seed derived from `seed` (common random numbers). Returns sigma (float), or
    (sigma, [(sigma, ratio), ...]) with return_history=True.
    """
    from percept.core.samplers import per_image_generators
    from percept.enhancer.pipeline import enhance

    projections = None
    if consistency:
        if codec is None:
            raise PerceptError("calibrate_sigma: consistency needs the codec (its files' cells)")
        pairs, projections = decode_projected(codec, images)
    else:
        pairs = list(images) if codec is None else decode_pairs(codec, images)
    if not pairs:
        raise PerceptError("calibrate_sigma needs at least one image")
    base = sum(_sse(d, x) for x, d in pairs)
    if base == 0:
        raise PerceptError(
            "the codec is lossless on these images (MSE 0): there is nothing to calibrate"
        )

    n_images = sum(d.shape[0] for _, d in pairs)

    def ratio_at(sigma: float) -> float:
        # Image j always gets the j-th seed drawn from `seed`: the same noise at every trial (so the
        # ratio is a smooth function of sigma) but independent noise across images.
        gens = per_image_generators(torch.Generator().manual_seed(seed), n_images)
        total, k = 0.0, 0
        for j, (x, d) in enumerate(
            tqdm(pairs, desc=f"sigma {sigma:.4g}", disable=not progress, leave=False)
        ):
            b = d.shape[0]
            if projections is not None:
                enhance_kwargs["project"] = projections[j]
            y = enhance(
                d, denoiser, sigma, preset, steps=steps, generator=gens[k : k + b], **enhance_kwargs
            )
            total, k = total + _sse(y, x), k + b
        return total / base

    sigma, history = bisect_log_sigma(ratio_at, mse_ratio, tol=tol, max_iter=max_iter)
    return (sigma, history) if return_history else sigma


def round_sigma(sigma: float, digits: int = 4) -> float:
    """sigma to `digits` significant digits: the value a file header stores and a decoder uses."""
    return float(f"{sigma:.{digits}g}")


def sigma_for_image(
    run: Callable[[float], Tensor],
    x: Tensor,
    x_hat: Tensor,
    mse_ratio: float = 2.0,
    *,
    tol: float = 0.02,
    hi: float = 0.5,
    max_iter: int = 20,
) -> tuple[float, float]:
    """Per-image calibration: the sigma where this image's enhanced MSE is `mse_ratio` times its
    decoded MSE. Only an encoder can do this (it has the original x); `percept.enhancer.signalling` writes
    the result into the file so the decoder applies the paper's rule (eq. 14) exactly per image
    instead of a table value calibrated on other images.

    run(sigma) returns the enhanced image exactly as the decoder will compute it (same noise seed,
    padding and steps). Trials use sigma rounded to 4 significant digits (`round_sigma`), the value
    a header stores, so the returned (sigma, ratio) is what the decoder reproduces. Errors are
    measured on the 8-bit grid the decoder writes.
    """
    from percept.core.images import quantize

    base = _sse(x_hat, x)
    if base == 0:
        raise PerceptError("the decode is lossless (MSE 0): there is no sigma to calibrate")

    def ratio_at(sigma: float) -> float:
        return _sse(quantize(run(round_sigma(sigma))), x) / base

    sigma, history = bisect_log_sigma(ratio_at, mse_ratio, hi=hi, tol=tol, max_iter=max_iter)
    ratio = next(r for s, r in history if s == sigma)
    return round_sigma(sigma), ratio


def calibration_images(n: int, size: int = 256) -> list[Tensor]:
    """The calibration set: the top-left size x size crops of the first n imagenet-sample val images
    with both sides >= size (never Kodak, which is for evaluation only)."""
    from percept.core.images import load_image
    from percept.hub.data import imagenet_sample_paths

    paths = imagenet_sample_paths("val")
    if not paths:
        raise PerceptError("imagenet-sample not found: set PERCEPT_DATA (see the data README)")
    crops = []
    for path in paths:
        img = load_image(path)[0]
        if min(img.shape[-2:]) >= size:
            crops.append(img[..., :size, :size])
            if len(crops) == n:
                return crops
    raise PerceptError(f"only {len(crops)} imagenet-sample val images are {size} px or larger")


def main(argv: list[str] | None = None) -> int:
    """`python -m percept.enhancer.calibrate --codec C --quality Q --prior P --preset medium`: fill the table."""
    p = argparse.ArgumentParser(prog="python -m percept.enhancer.calibrate", description=main.__doc__)
    p.add_argument("--codec", required=True)
    p.add_argument("--quality", type=int, required=True)
    p.add_argument("--prior", required=True, help="zoo name or weights path (the table's key)")
    p.add_argument("--preset", default="medium")
    p.add_argument("--mse-ratio", type=float, default=2.0)
    p.add_argument(
        "--images", type=int, default=16, help="imagenet-sample val images (256x256 crops)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--consistency",
        action="store_true",
        help="JPEG: calibrate with the consistency projection (table key <preset>+consistency)",
    )
    args = p.parse_args(argv)

    from percept.codecs import get_codec
    from percept.enhancer.pipeline import load_prior

    images = calibration_images(args.images)
    codec = get_codec(args.codec, args.quality)
    sigma, history = calibrate_sigma(
        codec,
        load_prior(args.prior),
        images,
        args.preset,
        args.mse_ratio,
        seed=args.seed,
        progress=True,
        return_history=True,
        consistency=args.consistency,
    )
    ratio = min(history, key=lambda h: abs(h[1] - args.mse_ratio))[1]
    info = {
        "mse_ratio_target": args.mse_ratio,
        "mse_ratio": ratio,
        "images": len(images),
        "set": "imagenet-sample val, top-left 256x256",
        "seed": args.seed,
        "model_sha256": model_sha256(args.prior),
    }
    if args.consistency:
        from percept.codecs.jpeg_consistency import PLANES

        info["projection"] = PLANES
    preset = table_preset(args.preset, args.consistency)
    store_sigma(args.codec, args.quality, args.prior, preset, sigma, info)
    print(
        f"{calibration_key(args.codec, args.quality, args.prior, preset)}: sigma {sigma:.4f} (ratio {ratio:.3f})"
    )
    return 0


if __name__ == "__main__":
    import sys

    try:
        raise SystemExit(main())
    except PerceptError as exc:
        print(f"python -m percept.enhancer.calibrate: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
