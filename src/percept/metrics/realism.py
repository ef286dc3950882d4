"""Weight-free realism: distances between the distributions of two image sets.

Realism in the perception-distortion sense (Blau & Michaeli 2018) is a divergence between the
distribution of reconstructions and that of real images, not a per-image score. FID measures it in
InceptionV3 feature space (``percept.metrics.deep``) and needs weights; the sliced Wasserstein
distance (SWD) on Laplacian-pyramid patches (Karras et al. 2018, ProGAN, appendix D) measures it on
raw local image statistics, needs nothing, and says at which scale two sets differ. Both compare
*sets*: patch positions are drawn independently in the two sets, so two samples of the same images
give a non-zero noise floor, which ``swd`` estimates by repeating over patch seeds.

Normalisation. ProGAN normalises each descriptor set by its own per-channel mean and standard
deviation. That hides blur: a blurred set has smaller variance at the fine levels and is rescaled
back up, so its normalised patches look almost like sharp ones. Here the default normalises *both*
sets with the reference set's statistics (``normalization="reference"``), which keeps lost (or
invented) energy visible; ``normalization="each"`` reproduces ProGAN's recipe for comparison.
Values are multiplied by 1e3 as in ProGAN's tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg, ndimage

from percept.errors import PerceptError

ImageSet = Sequence[torch.Tensor] | torch.Tensor

# ProGAN's binomial 5-tap filter [1, 4, 6, 4, 1] / 16, applied separably.
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def _as_list(images: ImageSet) -> list[torch.Tensor]:
    out = []
    for img in images:
        img = img.detach().float()
        out.append(img.unsqueeze(0) if img.dim() == 3 else img)
        if out[-1].dim() != 4 or out[-1].shape[:2] != (1, 3):
            raise ValueError(f"expected [3,H,W] or [1,3,H,W] images, got {tuple(img.shape)}")
    if not out:
        raise ValueError("an image set is empty")
    return out


def _blur(x: np.ndarray) -> np.ndarray:
    # scipy's "mirror" mode is ProGAN's border handling (reflect without repeating the edge pixel).
    x = ndimage.convolve1d(x, _BINOMIAL, axis=-2, mode="mirror")
    return ndimage.convolve1d(x, _BINOMIAL, axis=-1, mode="mirror")


def laplacian_pyramid(x: torch.Tensor | np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels [3,h,w] (finest first) and the low-pass residual last; ``levels`` in all.

    Level i = G_i - up(G_{i+1}), with G_{i+1} = down(blur(G_i)) (Burt & Adelson 1983, as in ProGAN).
    Computed with numpy/scipy: single-threaded and fast, where small torch ops on a busy machine
    lose most of their time to thread contention.
    """
    g = (
        x.detach().float().cpu().numpy()
        if isinstance(x, torch.Tensor)
        else np.asarray(x, np.float32)
    )
    g = g.reshape(g.shape[-3:])
    out = []
    for _ in range(levels - 1):
        low = _blur(g)[..., ::2, ::2]
        up = np.zeros_like(g)
        up[..., ::2, ::2] = low
        out.append(g - 4.0 * _blur(up))
        g = low
    out.append(g)
    return out


def _num_levels(images: list[torch.Tensor], min_size: int) -> int:
    short = min(min(img.shape[-2:]) for img in images)
    levels = 1
    while short // 2 >= min_size:
        short //= 2
        levels += 1
    return levels


def pyramids(images: ImageSet, levels: int) -> list[list[np.ndarray]]:
    """Laplacian pyramids of every image (computed once, then sampled with many patch seeds)."""
    return [laplacian_pyramid(img, levels) for img in _as_list(images)]


def pyramid_descriptors(
    pyrs: list[list[np.ndarray]],
    *,
    patches_per_image: int = 128,
    patch_size: int = 7,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Random ``patch_size``^2 x 3 neighbourhoods from every level of every pyramid.

    Returns one [N, 3, p, p] tensor per level (finest first), N = images x patches_per_image.
    """
    per_level: list[list[torch.Tensor]] = [[] for _ in pyrs[0]]
    for pyr in pyrs:
        for lvl, band in enumerate(pyr):
            h, w = band.shape[-2:]
            if h < patch_size or w < patch_size:
                raise ValueError(
                    f"pyramid level {lvl} is {h}x{w}, smaller than a {patch_size}px patch"
                )
            ys = torch.randint(0, h - patch_size + 1, (patches_per_image,), generator=generator)
            xs = torch.randint(0, w - patch_size + 1, (patches_per_image,), generator=generator)
            iy = ys.view(-1, 1, 1) + torch.arange(patch_size).view(1, -1, 1)
            ix = xs.view(-1, 1, 1) + torch.arange(patch_size).view(1, 1, -1)
            # band[:, iy, ix] -> [3, N, p, p]
            per_level[lvl].append(
                torch.from_numpy(band[:, iy.numpy(), ix.numpy()]).permute(1, 0, 2, 3)
            )
    return [torch.cat(chunks) for chunks in per_level]


def _stats(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of [N, 3, p, p] descriptors."""
    mean = d.mean(dim=(0, 2, 3), keepdim=True)
    return mean, d.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12)


def _check_normalization(normalization: str) -> None:
    if normalization not in ("reference", "each"):
        raise ValueError(f"unknown normalization {normalization!r}: use 'reference' or 'each'")


def _normalise(
    a: torch.Tensor, b: torch.Tensor, normalization: str
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_normalization(normalization)
    mean, std = _stats(a)
    if normalization == "each":
        mb, sb = _stats(b)
        return (a - mean) / std, (b - mb) / sb
    return (a - mean) / std, (b - mean) / std


def _unit_directions(
    dim: int, directions: int, generator: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    dirs = torch.randn(dim, directions, generator=generator, dtype=dtype)
    return dirs / dirs.norm(dim=0, keepdim=True)


def _sorted_projections(points: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """[directions, N]: the points' projections on each direction, sorted. Sorting contiguous rows
    is about twice as fast as sorting the [N, directions] product down its columns."""
    return (points.flatten(1) @ dirs).T.contiguous().sort(dim=1).values


def _mean_abs_difference(pa: torch.Tensor, pb: torch.Tensor) -> float:
    # Laid back out as [N, directions], so that the mean adds up in the order of a direct
    # [N, directions] computation: the same float, not one a rounding away.
    return float((pa - pb).T.contiguous().abs().mean())


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    directions: int = 512,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 1-Wasserstein distance between two equal-size point sets [N, D] (ProGAN's estimator).

    Projects both sets on random unit directions; in 1-D the optimal transport pairs sorted values,
    so W1 along a direction is the mean absolute difference of the sorted projections.
    """
    a, b = a.flatten(1), b.flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"point sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    dirs = _unit_directions(a.shape[1], directions, generator, a.dtype)
    return _mean_abs_difference(_sorted_projections(a, dirs), _sorted_projections(b, dirs))


@dataclass(frozen=True)
class SWDResult:
    """SWD x 1e3 averaged over pyramid levels: mean and std over patch seeds, and per level."""

    mean: float
    std: float
    per_seed: tuple[float, ...]
    per_level: tuple[float, ...]  # mean over seeds, finest level first
    normalization: str

    def __str__(self) -> str:
        return f"{self.mean:.1f} +- {self.std:.1f} (SWD x1e3, {self.normalization}-normalised)"


def _prepare(reference: ImageSet, test: ImageSet, levels: int | None, min_size: int):
    ref, tst = _as_list(reference), _as_list(test)
    if levels is None:
        levels = _num_levels(ref + tst, min_size)
    return pyramids(ref, levels), pyramids(tst, levels)


def _descriptor_pairs(pyr_ref, pyr_tst, *, seed: int, patches_per_image: int, patch_size: int):
    # Independent positions in the two sets (streams 2s and 2s+1): a distribution comparison.
    g_ref = torch.Generator().manual_seed(2 * seed)
    g_tst = torch.Generator().manual_seed(2 * seed + 1)
    da = pyramid_descriptors(
        pyr_ref, patches_per_image=patches_per_image, patch_size=patch_size, generator=g_ref
    )
    db = pyramid_descriptors(
        pyr_tst, patches_per_image=patches_per_image, patch_size=patch_size, generator=g_tst
    )
    n = min(da[0].shape[0], db[0].shape[0])
    # Sets of different sizes: a random subset of the larger, so that no image is left out by order.
    ia = torch.randperm(da[0].shape[0], generator=g_ref)[:n]
    ib = torch.randperm(db[0].shape[0], generator=g_tst)[:n]
    return [(a[ia], b[ib]) for a, b in zip(da, db)]


class _Pyramids:
    """An image set's Laplacian pyramids, each built once per level count and then shared by every
    comparison that uses the image (a bootstrap draws the same images again and again)."""

    def __init__(self, images: ImageSet):
        self.images = _as_list(images)
        self._built: dict[tuple[int, int], list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def get(self, idx: Sequence[int], levels: int) -> list[list[np.ndarray]]:
        for i in idx:
            if (i, levels) not in self._built:
                self._built[i, levels] = laplacian_pyramid(self.images[i], levels)
        return [self._built[i, levels] for i in idx]


def _swd_sets(
    ref: _Pyramids,
    ref_idx: Sequence[int],
    tests: Sequence[tuple[_Pyramids, Sequence[int]]],
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    patches_per_image: int = 128,
    patch_size: int = 7,
    directions: int = 512,
    levels: int | None = None,
    min_size: int = 16,
    normalization: str = "reference",
) -> list[SWDResult]:
    """`swd` of the images `ref_idx` of `ref` against each (set, indices) of `tests`: the numbers
    separate `swd` calls give, with what depends on the reference alone (its patches, their
    statistics, the directions and the sorted projections) computed once per seed and shared."""
    _check_normalization(normalization)
    ref_images = [ref.images[i] for i in ref_idx]
    pair_levels = [
        levels if levels is not None else _num_levels(ref_images + [s.images[i] for i in idx], min_size)
        for s, idx in tests
    ]  # fmt: skip
    draw = {"patches_per_image": patches_per_image, "patch_size": patch_size}
    per_seed: list[list[float]] = [[] for _ in tests]
    per_level: list[list[list[float]]] = [[] for _ in tests]
    for seed in seeds:
        drawn, sides = {}, {}
        for k, ((s, idx), n_levels) in enumerate(zip(tests, pair_levels)):
            # Independent positions in the two sets (streams 2s and 2s+1): a distribution comparison.
            if n_levels not in drawn:
                g_ref = torch.Generator().manual_seed(2 * seed)
                da = pyramid_descriptors(ref.get(ref_idx, n_levels), generator=g_ref, **draw)
                drawn[n_levels] = (da, torch.randperm(da[0].shape[0], generator=g_ref))
            da, perm = drawn[n_levels]
            g_tst = torch.Generator().manual_seed(2 * seed + 1)
            db = pyramid_descriptors(s.get(idx, n_levels), generator=g_tst, **draw)
            # Sets of different sizes: a random subset of the larger, so no image is left out by order.
            n = min(da[0].shape[0], db[0].shape[0])
            ib = torch.randperm(db[0].shape[0], generator=g_tst)[:n]
            if (n_levels, n) not in sides:
                g = torch.Generator().manual_seed(10_000 + seed)
                side = []
                for a in da:
                    a = a[perm[:n]]
                    mean, std = _stats(a)
                    dirs = _unit_directions(a[0].numel(), directions, g, a.dtype)
                    side.append((mean, std, dirs, _sorted_projections((a - mean) / std, dirs)))
                sides[n_levels, n] = side
            dists = []
            for (mean, std, dirs, pa), b in zip(sides[n_levels, n], db):
                b = b[ib]
                if normalization == "each":
                    mean, std = _stats(b)
                pb = _sorted_projections((b - mean) / std, dirs)
                dists.append(1e3 * _mean_abs_difference(pa, pb))
            per_level[k].append(dists)
            per_seed[k].append(float(np.mean(dists)))
    return [
        SWDResult(
            mean=float(np.mean(ps)),
            std=float(np.std(ps, ddof=1)) if len(ps) > 1 else 0.0,
            per_seed=tuple(ps),
            per_level=tuple(float(v) for v in np.mean(pl, axis=0)),
            normalization=normalization,
        )
        for ps, pl in zip(per_seed, per_level)
    ]


def _whole(images: _Pyramids) -> range:
    return range(len(images))


def swd(
    reference: ImageSet,
    test: ImageSet,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    patches_per_image: int = 128,
    patch_size: int = 7,
    directions: int = 512,
    levels: int | None = None,
    min_size: int = 16,
    normalization: str = "reference",
) -> SWDResult:
    """Sliced Wasserstein distance (x1e3) between the Laplacian-pyramid patches of two image sets.

    Lower is better; 0 only in the limit of infinitely many patches of one distribution. Each seed
    draws fresh patch positions and projection directions; the result is the mean over levels,
    averaged over seeds (``mean``) with its spread (``std``; patch sampling only, the images are
    fixed). Compare a value with the noise floor
    ``swd(reference, reference)``, which is large for small sets (few images x patches). Levels go down
    to a ``min_size`` short side (ProGAN: 16 px). Unlike FID it needs no weights and resolves scale;
    unlike LPIPS it is not per image: it says whether the test set's local statistics look real.
    Several test sets against one reference: ``swd_many``.
    """
    return swd_many(
        reference, [test], seeds=seeds, patches_per_image=patches_per_image,
        patch_size=patch_size, directions=directions, levels=levels, min_size=min_size,
        normalization=normalization,
    )[0]  # fmt: skip


def swd_many(reference: ImageSet, tests: Sequence[ImageSet], **options) -> list[SWDResult]:
    """``[swd(reference, t, **options) for t in tests]``, the same numbers, with the reference's
    side (pyramids, patches, statistics, sorted projections) computed once rather than per test."""
    ref = _Pyramids(reference)
    return _swd_sets(ref, _whole(ref), [(s, _whole(s)) for s in map(_Pyramids, tests)], **options)


@dataclass(frozen=True)
class SWDGain:
    """How much more real `test` is than `baseline` (SWD(baseline) - SWD(test), x1e3; > 0: better),
    with a bootstrap interval over the images (see `swd_gain`)."""

    gain: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the set of images, not only the patch draw, says so."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.gain:+.1f} [{self.low:+.1f}, {self.high:+.1f}] ({self.level:.0%}, SWD x1e3)"


def swd_gain(
    reference: ImageSet,
    baseline: ImageSet,
    test: ImageSet,
    *,
    resamples: int = 30,
    level: float = 0.9,
    seed: int = 0,
    **swd_options,
) -> SWDGain:
    """Realism gained by `test` over `baseline` (both outputs for the same `reference` images), with a
    paired percentile bootstrap over images.

    Each resample draws the images with replacement and one patch seed, and scores baseline and
    test on exactly the same images, reference patches and patch positions, so what they share
    cancels and the interval reflects which images were chosen as well as the patch draw (the
    `std` of `swd` reflects only the latter). `gain` is the difference of plain `swd` means over
    seeds 0..3 on all images.

    A resample repeats some images and drops others, which moves SWD by itself (fewer distinct
    patches), so the resampled gains can sit to one side of `gain` and a plain percentile interval
    can miss its own estimate. The interval is therefore shifted by the bootstrap's estimate of
    that bias (the resamples' mean gain minus `gain`): its width is the percentile interval's, and
    it is centred where the full set puts the gain. Several tests against one baseline:
    ``swd_gains``."""
    return swd_gains(
        reference, baseline, [test], resamples=resamples, level=level, seed=seed, **swd_options
    )[0]


def swd_gains(
    reference: ImageSet,
    baseline: ImageSet,
    tests: Sequence[ImageSet],
    *,
    resamples: int = 30,
    level: float = 0.9,
    seed: int = 0,
    **swd_options,
) -> list[SWDGain]:
    """``[swd_gain(reference, baseline, t, ...) for t in tests]``, the same numbers: every test sees
    the same resamples, so the reference and baseline sides of each resample are computed once, and
    each image's pyramid once in all. `benchmarks/swd_speed.py` measures what that saves."""
    ref, base = _Pyramids(reference), _Pyramids(baseline)
    sets = [_Pyramids(t) for t in tests]
    if not all(len(s) == len(ref) for s in (base, *sets)) or len(ref) < 2:
        raise PerceptError("swd_gain needs reference, baseline and test sets of one size (>= 2)")
    if resamples < 2 or not 0 < level < 1:
        raise PerceptError("swd_gain needs resamples >= 2 and 0 < level < 1")
    whole = _whole(ref)
    plain, *scored = _swd_sets(ref, whole, [(s, whole) for s in (base, *sets)], **swd_options)
    points = [plain.mean - s.mean for s in scored]
    rng = np.random.default_rng(seed)
    gains: list[list[float]] = [[] for _ in sets]
    for r in range(resamples):
        idx = rng.integers(0, len(ref), len(ref)).tolist()
        one = {**swd_options, "seeds": (1000 + r,)}
        plain, *scored = _swd_sets(ref, idx, [(s, idx) for s in (base, *sets)], **one)
        for k, s in enumerate(scored):
            gains[k].append(plain.mean - s.mean)
    out = []
    for point, drawn in zip(points, gains):
        bias = float(np.mean(drawn)) - point
        lo, hi = np.quantile(drawn, [(1 - level) / 2, (1 + level) / 2]) - bias
        out.append(SWDGain(float(point), float(lo), float(hi), level, resamples))
    return out


def kernel_distance(
    a: np.ndarray, b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel distance (KID, Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, averaged over random subsets; returns (mean, std over subsets).

    Unbiased, so unlike FID its expectation does not depend on the sample size and it can be
    slightly negative when the two distributions match.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least two samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        off = m * (m - 1)
        values.append(
            (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean()
        )
    return float(np.mean(values)), float(np.std(values))


def patch_kid(
    reference: ImageSet,
    test: ImageSet,
    *,
    seed: int = 0,
    patches_per_image: int = 128,
    patch_size: int = 7,
    levels: int | None = None,
    min_size: int = 16,
    subsets: int = 20,
    subset_size: int = 1000,
) -> tuple[float, ...]:
    """KID (x1e3) per pyramid level on the same reference-normalised patches as ``swd``, finest first."""
    pyr_ref, pyr_tst = _prepare(reference, test, levels, min_size)
    pairs = _descriptor_pairs(
        pyr_ref, pyr_tst, seed=seed, patches_per_image=patches_per_image, patch_size=patch_size
    )
    out = []
    for a, b in pairs:
        na, nb = _normalise(a, b, "reference")
        mean, _ = kernel_distance(
            na.flatten(1).numpy(),
            nb.flatten(1).numpy(),
            subsets=subsets,
            subset_size=subset_size,
            seed=seed,
        )
        out.append(1e3 * mean)
    return tuple(out)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of [N, D] features, the Gaussian fit FID compares."""
    features = np.asarray(features, np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel 2017)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A near-singular product (fewer samples than dimensions): regularise as pytorch-fid does.
        eps = 1e-6 * np.eye(sigma1.shape[0])
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
