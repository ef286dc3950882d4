"""Bjontegaard deltas against the `bjontegaard` package on CompressAI's published Kodak curves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from percept.metrics import bd_metric, bd_rate

bjontegaard = pytest.importorskip("bjontegaard")

CURVES = json.loads((Path(__file__).parent / "data" / "compressai_kodak.json").read_text())[
    "curves"
]
LEARNED = ("bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-anchor")


def _package(fn, ref, test, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its overlap warning; the curves overlap enough here
        return fn(
            ref["bpp"],
            ref["psnr"],
            test["bpp"],
            test["psnr"],
            method,
            require_matching_points=False,
            min_overlap=0,
        )


@pytest.mark.parametrize("method", ["akima", "pchip", "cubic"])
@pytest.mark.parametrize("codec", LEARNED)
def test_matches_bjontegaard_package_on_compressai_kodak(codec, method):
    ref, test = CURVES["jpeg"], CURVES[codec]
    ours = bd_rate(ref["bpp"], ref["psnr"], test["bpp"], test["psnr"], method=method)
    assert ours == pytest.approx(_package(bjontegaard.bd_rate, ref, test, method), abs=1e-9)
    ours = bd_metric(ref["bpp"], ref["psnr"], test["bpp"], test["psnr"], method=method)
    assert ours == pytest.approx(_package(bjontegaard.bd_psnr, ref, test, method), abs=1e-9)


def test_published_bd_rates_against_jpeg():
    # FINDINGS.md (CompressAI's figures, pchip): -55.0 %, -58.0 %, -65.4 %.
    ref = CURVES["jpeg"]
    got = [
        round(
            bd_rate(ref["bpp"], ref["psnr"], CURVES[c]["bpp"], CURVES[c]["psnr"], method="pchip"), 1
        )
        for c in LEARNED
    ]
    assert got == [-55.0, -58.0, -65.4]


def test_sign_conventions_higher_is_better():
    rate = np.array([0.2, 0.4, 0.8, 1.6])
    quality = np.array([26.0, 29.0, 32.0, 35.0])
    for method in ("akima", "pchip", "cubic"):
        # Same quality at half the rate: exactly -50 %; the reverse comparison is +100 %.
        assert bd_rate(rate, quality, rate / 2, quality, method=method) == pytest.approx(-50.0)
        assert bd_rate(rate / 2, quality, rate, quality, method=method) == pytest.approx(100.0)
        assert bd_metric(rate, quality, rate, quality + 0.7, method=method) == pytest.approx(0.7)


def test_sign_conventions_lower_is_better():
    rate = np.array([0.2, 0.4, 0.8, 1.6])
    lpips = np.array([0.40, 0.28, 0.18, 0.10])
    for method in ("akima", "pchip", "cubic"):
        # LPIPS-BDRate: the same LPIPS at half the rate saves 50 %.
        assert bd_rate(
            rate, lpips, rate / 2, lpips, method=method, higher_is_better=False
        ) == pytest.approx(-50.0)
        # BD-LPIPS with the sign flipped: 0.03 lower LPIPS at every rate is +0.03 (better).
        assert bd_metric(
            rate, lpips, rate, lpips - 0.03, method=method, higher_is_better=False
        ) == pytest.approx(0.03)
        # The bjontegaard package needs a rising metric for BD-rate: it agrees on -LPIPS.
        test_rate = rate * np.array([0.6, 0.55, 0.5, 0.45])
        expected = bjontegaard.bd_rate(rate, -lpips, test_rate, -lpips, method, min_overlap=0)
        ours = bd_rate(rate, lpips, test_rate, lpips, method=method, higher_is_better=False)
        assert ours == pytest.approx(expected, abs=1e-9)
        expected = -bjontegaard.bd_psnr(
            rate, lpips, rate, lpips - 0.03 * rate, method, min_overlap=0
        )
        assert bd_metric(
            rate, lpips, rate, lpips - 0.03 * rate, method=method, higher_is_better=False
        ) == pytest.approx(expected)


def test_wrong_direction_and_bad_input_are_errors():
    rate = [0.2, 0.4, 0.8, 1.6]
    fid = [80.0, 50.0, 30.0, 20.0]
    with pytest.raises(ValueError, match="higher_is_better"):
        bd_rate(rate, fid, rate, fid, higher_is_better=True)
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0, 0.4, 0.8, 1.6], fid, rate, fid, higher_is_better=False)
    with pytest.raises(ValueError, match="method"):
        bd_rate(rate, [1, 2, 3, 4], rate, [1, 2, 3, 4], method="linear")
    assert np.isnan(bd_rate(rate, [20, 21, 22, 23], rate, [30, 31, 32, 33]))
