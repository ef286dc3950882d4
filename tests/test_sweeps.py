"""The sweeps behind the book's chapters: sigma sweep and the presets' speed-performance table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from percept.errors import PerceptError
from percept.eval.sweeps import level_breakdown, preset_sweep, sigma_sweep
from percept.models import UNet, UNetConfig

TINY = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)


def test_sigma_sweep_includes_the_plain_decode(sweep_setup):
    images, codec, prior = sweep_setup
    per_image, table = sigma_sweep(images, codec, prior, [0.05], progress=False, swd_seeds=(0, 1))
    assert list(table["sigma"]) == [0.0, 0.05]
    assert table.loc[0, "mse_ratio"] == pytest.approx(1.0)
    assert len(per_image) == 4 and per_image["bpp"].gt(0).all()
    # the SWD's patch count reaches every estimate: more patches, a lower floor
    _, more = sigma_sweep(
        images, codec, prior, [0.05], progress=False, swd_seeds=(0, 1), patches_per_image=512
    )
    assert more.loc[0, "swd_floor"] < table.loc[0, "swd_floor"]
    assert more.loc[0, "swd"] != table.loc[0, "swd"]


def test_level_breakdown_splits_the_reported_swd_by_pyramid_level(sweep_setup):
    images, codec, prior = sweep_setup
    _, table = sigma_sweep(images, codec, prior, [0.3], progress=False, swd_seeds=(0, 1))
    levels = level_breakdown(
        images, codec, prior, 0.3, preset="medium", swd_seeds=(0, 1), progress=False
    )
    by = levels.groupby("output", sort=False)["swd"]
    assert (
        list(by.size().index) == ["floor", "decode", "enhanced"] and by.size().eq(3).all()
    )  # 64 px
    # the level means are the sweep's numbers, for the same images, seeds and per-image noise
    assert by.mean()["decode"] == pytest.approx(table.loc[0, "swd"])
    assert by.mean()["enhanced"] == pytest.approx(table.loc[1, "swd"])
    assert by.mean()["floor"] == pytest.approx(table.loc[0, "swd_floor"])


def test_preset_sweep_times_methods_and_says_why_one_cannot_run(sweep_setup):
    images, codec, prior = sweep_setup
    per_image, table = preset_sweep(
        images, codec, prior, ["medium", ("euler_maruyama", 3), "fast", "slow"], 0.1,
        progress=False, swd_seeds=(0, 1),
    )  # fmt: skip
    rows = table.set_index("method")
    assert list(rows.index) == ["decode", "medium", "euler_maruyama x3", "fast", "slow"]
    assert rows.loc["decode", "mse_ratio"] == pytest.approx(1.0)
    assert rows.loc["medium", "nfe"] == 6 and rows.loc["euler_maruyama x3", "nfe"] == 3
    assert rows.loc["medium", "seconds"] > 0 and rows.loc["medium", "psnr"] > 0
    assert "consistency" in rows.loc["fast", "unavailable"]
    assert (
        "differentiable" in rows.loc["slow", "unavailable"]
        or "codec" in rows.loc["slow", "unavailable"]
    )
    assert set(per_image["method"]) == {"decode", "medium", "euler_maruyama x3"}
    assert rows.loc["medium", "sampler"] == "dpmpp_2m" and rows.loc["slow", "sampler"] == "dps"


def test_preset_sweep_runs_fast_presets_on_a_given_consistency_model(sweep_setup):
    from percept.models import ConsistencyDenoiser

    images, codec, prior = sweep_setup
    torch.manual_seed(1)
    cm = ConsistencyDenoiser(UNet(TINY)).eval()
    _, table = preset_sweep(
        images, codec, prior, ["fast", "fast-2", "medium"], 0.1, progress=False, swd_seeds=(0,),
        consistency_model=cm,
    )  # fmt: skip
    rows = table.set_index("method")
    assert rows["unavailable"].isna().all()
    assert rows.loc["fast", "nfe"] == 1 and rows.loc["fast-2", "nfe"] == 2


def test_solver_crossover_pairs_ode_and_sde_at_equal_evaluations_and_calls_ties():
    import pandas as pd

    from percept.eval.sweeps import solver_crossover

    table = pd.DataFrame({
        "method": ["decode", "medium", "dpmpp_2m x2", "euler_ancestral x2", "medium-sde", "dpmpp_2m x30",
                   "euler_ancestral x6", "euler_maruyama x6", "dpmpp_2m x12", "slow"],
        "sampler": [None, "dpmpp_2m", "dpmpp_2m", "euler_ancestral", "euler_ancestral", "dpmpp_2m",
                    "euler_ancestral", "euler_maruyama", "dpmpp_2m", "dps"],
        "nfe": [0, 6, 2, 2, 30, 30, 6, 6, 12, 100],
        "swd": [50.0, 40.0, 45.0, 60.0, 30.0, 36.0, 41.0, 20.0, 38.0, float("nan")],
        "swd_std": [1.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.5, 0.1, 1.0, float("nan")],
        "seconds": [0.0, 6.0, 2.0, 2.1, 30.0, 29.0, 6.5, 6.2, 12.0, float("nan")],
        "unavailable": [None] * 9 + ["needs a differentiable codec"],
    })  # fmt: skip
    pairs = solver_crossover(table)
    # 12 has no SDE, 100 no ODE (and did not run), euler_maruyama is not the SDE asked for
    assert list(pairs["nfe"]) == [2, 6, 30]
    assert list(pairs["method_ode"]) == ["dpmpp_2m x2", "medium", "dpmpp_2m x30"]
    assert list(pairs["method_sde"]) == ["euler_ancestral x2", "euler_ancestral x6", "medium-sde"]
    # 2: 60 - 45 = 15 > 3; 6: 1 < 2.5; 30: 36 - 30 = 6 > 2
    assert list(pairs["more_realistic"]) == ["ODE", "neither", "SDE"]
    other = solver_crossover(table, sde="euler_maruyama")
    assert list(other["nfe"]) == [6] and list(other["more_realistic"]) == ["SDE"]


def test_crossover_verdict_and_sentence_follow_the_rows():
    import pandas as pd

    from percept.eval.sweeps import crossover_holds, describe_crossover

    def rows(nfes, wins):
        return pd.DataFrame({"nfe": nfes, "more_realistic": wins})

    holds = rows([2, 6, 12, 30], ["ODE", "ODE", "neither", "SDE"])
    assert crossover_holds(holds) is True
    assert "between 6 and 30 evaluations" in describe_crossover(holds)
    assert crossover_holds(rows([2, 30], ["ODE", "neither"])) is False
    assert "no crossover up to 30" in describe_crossover(rows([2, 30], ["ODE", "neither"]))
    gaining = rows([2, 12, 30], ["ODE", "ODE", "ODE"]).assign(swd_sde=[112.0, 107.8, 97.3])
    assert describe_crossover(gaining).endswith(
        "The SDE is still gaining at the most evaluations (SWD 107.8 at 12, 97.3 at 30), so a crossover may lie further on.")
    assert "still gaining" not in describe_crossover(gaining.assign(swd_sde=[112.0, 97.3, 107.8]))
    assert "even at 2" in describe_crossover(rows([2, 30], ["SDE", "SDE"]))
    assert "neither solver" in describe_crossover(rows([2, 30], ["neither", "neither"]))
    assert "2: SDE; 30: ODE" in describe_crossover(rows([2, 30], ["SDE", "ODE"]))
    assert crossover_holds(rows([], [])) is None and "No ODE" in describe_crossover(rows([], []))


def test_sweep_findings_reads_the_best_point_and_the_rule_crossing_off_each_line():
    import pandas as pd

    from percept.eval.sweeps import sweep_findings

    table = pd.DataFrame({
        "setting": ["a"] * 4 + ["b"] * 2, "preset": ["fast"] * 6,
        "sigma": [0.0, 0.1, 0.2, 0.4, 0.0, 0.1],
        "swd": [50.0, 40.0, 45.0, 60.0, 30.0, 31.0],
        "psnr": [30.0, 29.0, 28.0, 26.0, 25.0, 24.5],
        "mse_ratio": [1.0, 1.5, 2.5, 4.0, 1.0, 1.2],
    })  # fmt: skip
    f = sweep_findings(table).set_index("setting")
    assert f.loc["a", "best_sigma"] == 0.1 and f.loc["a", "best_swd"] == 40.0
    assert f.loc["a", "gain"] == 10.0 and f.loc["a", "best_psnr_change"] == -1.0
    # ratio 2 lies half-way between sigma 0.1 (1.5) and 0.2 (2.5)
    assert f.loc["a", "sigma_at_target"] == pytest.approx(0.15)
    assert f.loc["a", "swd_at_target"] == pytest.approx(42.5)
    # a line that never reaches the rule's ratio says so with NaN; its best point is worse than the decode
    assert np.isnan(f.loc["b", "sigma_at_target"]) and f.loc["b", "gain"] == -1.0
    with pytest.raises(PerceptError, match="no sigma 0"):
        sweep_findings(table[table["sigma"] > 0])
