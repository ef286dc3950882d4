"""percept.eval.rd: reading rate-distortion curves at a point."""

from __future__ import annotations

import math

import pandas as pd

from percept.eval.rd import curves_at


def _curves() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "codec": ["a", "a", "a", "b", "b"],
            "quality": [1, 2, 3, 1, 2],
            "bpp": [0.2, 0.5, 1.0, 0.4, 0.8],
            "psnr": [26.0, 30.0, 34.0, 31.0, 35.0],
        }
    )


def test_rate_at_psnr_interpolates_and_is_nan_outside_a_curve():
    rate = curves_at(_curves(), 32.0)
    assert math.isclose(rate["a"], 0.75)
    assert math.isclose(rate["b"], 0.5)
    assert math.isnan(curves_at(_curves(), 28.0)["b"])  # b starts at 31 dB: no extrapolation


def test_psnr_at_rate_reads_the_other_axis():
    quality = curves_at(_curves(), 0.5, along="bpp", read="psnr")
    assert quality.to_dict() == {"a": 30.0, "b": 32.0}
    assert list(curves_at(_curves(), 0.1, along="bpp", read="psnr").isna()) == [True, True]
