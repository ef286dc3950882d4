"""Bjontegaard deltas: average rate saving (BD-rate) and average quality gain (BD-metric).

Bjontegaard (VCEG-M33, 2001) fits one curve per codec through its (rate, quality) points and
integrates the gap over the range where both curves are defined:

- BD-rate: x = quality, y = log10(rate); mean of y_test - y_ref over the common quality interval,
  reported as a percentage 100 (10^mean - 1). Negative = the test codec needs less rate for the same
  quality.
- BD-metric (BD-PSNR, BD-FID, BD-LPIPS): x = log10(rate), y = quality; mean of q_test - q_ref over the
  common log-rate interval, in the metric's own units.

Interpolation follows the ``bjontegaard`` package (Herglotz et al. 2022): ``"pchip"`` (piecewise
cubic Hermite, monotone; used for CompressAI's tables and recommended by JVET-AH0223's discussion),
``"akima"`` (Akima 1970, JVET's current common test conditions) and ``"cubic"`` (the original
least-squares third-order polynomial of VCEG-M33).

Lower-is-better metrics (LPIPS, FID, DISTS, SWD) need no change to BD-rate: a curve is a curve, and
the rate needed to reach a given LPIPS is what is integrated. Their BD-metric is reported with the
*sign flipped* when ``higher_is_better=False``, so that for every metric a positive BD-metric means
the test codec is better (e.g. BD-FID = +3 means FID 3 points lower at the same rate). Paper 1
reports BD-FID as a plain average FID difference (negative = better); use ``bd_metric(...,
higher_is_better=True)`` on FID to get that convention, and say which one a table uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import Akima1DInterpolator, PchipInterpolator

METHODS = ("akima", "pchip", "cubic")


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"Bjontegaard curve has repeated abscissae: {x.tolist()}")
    if method == "cubic":
        # VCEG-M33: one least-squares cubic through all points, integrated analytically.
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    if method == "pchip":
        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "akima":
        if len(x) == 2:
            # Two points: a straight line (as the bjontegaard package does), integrated exactly.
            return float(np.interp([lo, hi], x, y).mean() * (hi - lo))
        return float(Akima1DInterpolator(x, y).integrate(lo, hi))
    raise ValueError(f"unknown interpolation method {method!r}: choose from {', '.join(METHODS)}")


def _delta(x_ref, y_ref, x_test, y_test, method: str) -> float:
    """Mean of f_test - f_ref over the overlap of the two x ranges (NaN when they do not overlap)."""
    x_ref, y_ref, x_test, y_test = (
        np.asarray(v, dtype=np.float64) for v in (x_ref, y_ref, x_test, y_test)
    )
    for x, y, who in ((x_ref, y_ref, "reference"), (x_test, y_test, "test")):
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"{who} curve: rate and metric need the same number of points")
        if len(x) < (4 if method == "cubic" else 2):
            raise ValueError(
                f"{who} curve has {len(x)} points; {method!r} needs at least {4 if method == 'cubic' else 2}"
            )
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
            raise ValueError(f"{who} curve has non-finite values")
    lo, hi = max(x_ref.min(), x_test.min()), min(x_ref.max(), x_test.max())
    if hi <= lo:
        return float("nan")
    ref = _integral(x_ref, y_ref, lo, hi, method)
    test = _integral(x_test, y_test, lo, hi, method)
    return (test - ref) / (hi - lo)


def _check_rates(*rates: Sequence[float]) -> None:
    for r in rates:
        if np.any(np.asarray(r, dtype=np.float64) <= 0):
            raise ValueError("rates must be positive (they are taken in log10)")


def bd_rate(
    rate_ref: Sequence[float],
    metric_ref: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    *,
    method: str = "akima",
    higher_is_better: bool = True,
) -> float:
    """BD-rate in percent: the average rate change of the test codec at equal quality.

    Negative = the test codec saves rate (-30.0 means 30 % fewer bits for the same quality). NaN when
    the quality ranges of the two curves do not overlap. ``higher_is_better`` does not change the
    computation (the integral is over quality either way) and is accepted for symmetry with
    ``bd_metric``; it is validated against the data, since a metric whose direction is wrong makes
    a BD-rate meaningless.

    LPIPS-BDRate (paper 2) is defined here as ``bd_rate(bpp_ref, lpips_ref, bpp_test, lpips_test,
    higher_is_better=False)``: the BD-rate computed with LPIPS (AlexNet, v0.1, lower is better) on
    the quality axis instead of PSNR, i.e. the average change in bits needed to reach the same LPIPS,
    integrated over the LPIPS range both curves cover. Negative = fewer bits for the same LPIPS
    (an improvement). Paper 2 quotes improvements as positive percentages; a rate saving cannot
    exceed 100 %, so its "more than 150 %" cannot be a saving on this scale (only its abstract is
    available). Tables here report the signed BD-rate as defined above.
    """
    _check_rates(rate_ref, rate_test)
    _check_direction(rate_ref, metric_ref, higher_is_better, "reference")
    _check_direction(rate_test, metric_test, higher_is_better, "test")
    mean_log_ratio = _delta(
        metric_ref, np.log10(rate_ref), metric_test, np.log10(rate_test), method
    )
    return float(100.0 * (10.0**mean_log_ratio - 1.0))


def bd_metric(
    rate_ref: Sequence[float],
    metric_ref: Sequence[float],
    rate_test: Sequence[float],
    metric_test: Sequence[float],
    *,
    method: str = "akima",
    higher_is_better: bool = True,
) -> float:
    """BD-metric: average quality difference (test - reference) over the common log-rate range.

    BD-PSNR in dB with ``higher_is_better=True``. With ``higher_is_better=False`` (LPIPS, FID) the sign
    is flipped, so positive always means the test codec is better: bd_metric on FID values of 20 (ref)
    and 17 (test) at equal rates gives +3.
    """
    _check_rates(rate_ref, rate_test)
    delta = _delta(np.log10(rate_ref), metric_ref, np.log10(rate_test), metric_test, method)
    return float(delta if higher_is_better else -delta)


def _check_direction(
    rate: Sequence[float], metric: Sequence[float], higher_is_better: bool, who: str
) -> None:
    # Quality should improve with rate; a curve that consistently goes the other way means the
    # metric's direction was given wrongly (e.g. FID passed with higher_is_better=True).
    r, m = np.asarray(rate, np.float64), np.asarray(metric, np.float64)
    if len(r) < 2:
        return
    slope = np.corrcoef(r, m)[0, 1] if np.std(m) > 0 else 0.0
    if (slope < -0.5 and higher_is_better) or (slope > 0.5 and not higher_is_better):
        direction = "falls" if slope < 0 else "rises"
        raise ValueError(
            f"{who} curve: the metric {direction} with rate, which contradicts "
            f"higher_is_better={higher_is_better}; pass the metric's true direction"
        )
