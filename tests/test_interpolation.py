"""Paper 1's Fig. 4 loop: convex interpolation between the decode and its enhancement."""

from __future__ import annotations

import pytest

from percept.errors import PerceptError
from percept.eval.interpolation import interpolation_sweep, realism_at, traversals
from percept.eval.sweeps import sigma_sweep


def test_the_endpoints_are_the_decode_and_the_sigma_sweeps_point(sweep_setup):
    images, codec, prior = sweep_setup
    opts = {"preset": "medium", "progress": False, "swd_seeds": (0, 1)}
    _, sweep = sigma_sweep(images, codec, prior, [0.3], **opts)
    per_image, table = interpolation_sweep(images, codec, prior, 0.3, [0.5], **opts)
    assert list(table["alpha"]) == [0.0, 0.5, 1.0] and (table["sigma"] == 0.3).all()
    assert len(per_image) == 6
    for col in ("mse", "psnr", "swd", "swd_floor", "bpp"):
        assert table[col].iloc[0] == pytest.approx(sweep[col].iloc[0])  # alpha 0: the decode
        assert table[col].iloc[-1] == pytest.approx(sweep[col].iloc[-1])  # alpha 1: sigma 0.3
    assert table["mse_ratio"].iloc[0] == pytest.approx(1.0)
    # MSE is convex in alpha: the midpoint lies below the chord between the endpoints
    mid, end = table["mse_ratio"].iloc[1], table["mse_ratio"].iloc[2]
    assert mid <= (1 + end) / 2 + 1e-3
    both = traversals(sweep, table)
    assert set(both["path"]) == {"sigma", "interpolation"}
    assert list(both.loc[both["path"] == "interpolation", "step"]) == [0.0, 0.5, 1.0]
    assert realism_at(table, 1.0) == pytest.approx(table["swd"].iloc[0])
    assert realism_at(table, end + 1) != realism_at(table, end + 1)  # NaN beyond the range


def test_bad_arguments(sweep_setup):
    images, codec, prior = sweep_setup
    with pytest.raises(PerceptError, match="sigma"):
        interpolation_sweep(images, codec, prior, 0.0, [0.5], progress=False)
    with pytest.raises(PerceptError, match="alphas"):
        interpolation_sweep(images, codec, prior, 0.1, [1.5], progress=False)
