"""Choose sigma from the perception-distortion bound: the noise level at which the MSE doubles.

Blau and Michaeli's bound (paper eq. 3) says a perfect-realism decoder needs at most twice the MSE
of the MSE-optimal one; section 3.1 (eq. 14) picks sigma where MSE(enhanced, x) reaches
`mse_ratio` * MSE(decoded, x). `calibrate_sigma` finds that sigma by bisection in log(sigma) on a
calibration set, with the same noise seeds at every trial (common random numbers), so the ratio is
a deterministic, nearly monotone function of sigma.

Calibrated values are data (`percept.enhancer.table`); `percept calibrate` measures an entry and
stores it. Never calibrate on Kodak (evaluation only): the command uses imagenet-sample val.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from percept.codecs.container import decode_all
from percept.core.images import quantize
from percept.core.samplers import per_image_generators
from percept.enhancer.pipeline import enhance
from percept.enhancer.presets import EnhancerConfig, as_config
from percept.errors import PerceptError
from percept.hub.datasets import iter_dataset


class TargetOutOfReach(PerceptError):
    """The MSE ratio stays below the target even at the largest sigma searched."""


def _sse(a: Tensor, b: Tensor) -> float:
    return float(torch.sum((a.double() - b.double()) ** 2))


def decode_pairs(codec, images: Iterable[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(source, decoded) for each image [1,3,H,W] through the codec's real bytes."""
    return [(x, codec.decode(codec.encode(x))) for x in images]


def decode_projected(codec, images: Iterable[Tensor]) -> tuple[list, list]:
    """(pairs as `decode_pairs`, each file's JPEG consistency projection) through real files."""
    _, originals, decoded, _, projections = decode_all(dict(enumerate(images)), codec, True)
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
        if abs(r_hi - target) <= tol * target:  # within tolerance already (at the cap, say)
            return hi, history
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
    config: EnhancerConfig | str = "medium",
    mse_ratio: float = 2.0,
    *,
    seed: int = 0,
    tol: float = 0.02,
    max_iter: int = 20,
    progress: bool = False,
    return_history: bool = False,
    **enhance_kwargs,
):
    """The sigma where MSE(enhance(decoded), source) = mse_ratio * MSE(decoded, source) (eq. 3, 14).

    codec: anything with encode/decode (real bytes), applied to each image [1,3,H,W] in `images`;
    or None, and `images` is a sequence of (source, decoded) pairs, each [B,C,H,W] (batches are
    fine). Squared errors are pooled over all pixels of the set. A consistency `config` (JPEG,
    needs a codec): every enhancement uses its file's consistency projection.
    Every trial draws image j's noise from the j-th seed derived from `seed` (common random numbers). Returns sigma (float), or
    (sigma, [(sigma, ratio), ...]) with return_history=True.
    """
    config = as_config(config)
    projections = None
    if config.consistency:
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
            y = enhance(d, denoiser, sigma, config, generator=gens[k : k + b], **enhance_kwargs)
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
    crops = []
    for item in iter_dataset("imagenet-sample:val"):
        img = item.image
        if min(img.shape[-2:]) >= size:
            crops.append(img[..., :size, :size])
            if len(crops) == n:
                return crops
    raise PerceptError(f"only {len(crops)} imagenet-sample val images are {size} px or larger")
