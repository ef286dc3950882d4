"""percept.eval.claims on small synthetic results files with known answers."""

import json
import math
from pathlib import Path

import pytest

from percept.eval import claims
from percept.eval.results import SCHEMA

IMAGES = ("a", "b")
BPP = {1: 0.2, 2: 0.4}
DECODE_PSNR = {1: 30.0, 2: 32.0}


def results(methods: dict, *, swd: dict, swd_std: float = 1.0, codec="percept-hyperprior", fid=True) -> dict:
    """methods: name -> PSNR offset from the decode (dB, the same for every image and rate);
    swd: (quality, method) -> the cell's SWD."""
    rows, cells = [], []
    for q in BPP:
        for m, offset in methods.items():
            for i, image in enumerate(IMAGES):
                rows.append({"image": image, "codec": codec, "quality": q, "method": m, "bytes": 1000 * q + i,
                             "bpp": BPP[q], "psnr": DECODE_PSNR[q] + offset, "ms_ssim": None,
                             "ssimulacra2": 0.0, "decode_s": 2.0 if m.startswith("enhance:medium") else 0.5})
            cell = {"codec": codec, "quality": q, "method": m, "n": 2,
                    "swd": {"mean": swd[(q, m)], "std": swd_std, "per_seed": [swd[(q, m)]]}}
            if fid:
                cell["fid"] = {"available": False, "reason": "cannot download inception.pth (offline): x"}
            cells.append(cell)
    config = {"codecs": {codec: list(BPP)}, "methods": list(methods), "limit": len(IMAGES)}
    return {"schema": SCHEMA, "name": "t", "description": "", "config": config, "rows": rows, "cells": cells}


def fusion_file(tau_psnr=(0.0, 0.0, -0.5), tau_swd=(100, 90, 80)) -> dict:
    methods = {"decode": 0.0, "fuse:0": tau_psnr[0], "fuse:0.5": tau_psnr[1], "fuse:1": tau_psnr[2],
               "enhance:fast:0.1": -1.0, "enhance:fast:auto": -2.0, "enhance:medium:auto": -2.5}
    swd = {}
    for q, scale in zip(BPP, (1.0, 0.6)):  # the higher rate is more realistic: SWD x0.6
        values = {"decode": 100.0, "fuse:0": tau_swd[0], "fuse:0.5": tau_swd[1], "fuse:1": tau_swd[2],
                  "enhance:fast:0.1": 80.0, "enhance:fast:auto": 70.0, "enhance:medium:auto": 75.0}
        swd.update({(q, m): v * scale for m, v in values.items()})
    return results(methods, swd=swd)


def test_realism_change_and_verdict():
    src = claims.Sources(fusion=fusion_file())
    change = claims.realism_change(claims.cell_table(src.fusion), "enhance:fast:auto")
    assert change.gain.tolist() == pytest.approx([30.0, 18.0])
    assert change.psnr_loss.tolist() == pytest.approx([2.0, 2.0])
    assert change.mse_ratio.tolist() == pytest.approx([10 ** 0.2, 10 ** 0.2])
    assert claims.fast_learned(src).verdict == claims.HOLDS_OURS
    # a gain inside the SWD seeds' spread is not a gain
    noisy = results({"decode": 0.0, "enhance:fast:auto": -2.0}, swd_std=5.0,
                    swd={(q, m): v for q in BPP for m, v in (("decode", 100.0), ("enhance:fast:auto", 97.0))})
    finding = claims.fast_learned(claims.Sources(fusion=noisy))
    assert finding.verdict == claims.FAILS and "spread at q1, q2" in finding.why


def test_medium_against_fast():
    finding = claims.medium_beats_fast(claims.Sources(fusion=fusion_file()))
    assert finding.verdict == claims.FAILS
    assert finding.values["wins"] == 0 and finding.values["losses"] == 2 and finding.values["rates"] == 2
    assert "median decode 0.5 s -> 2.0 s" in finding.ours


def test_bd_psnr_bound_is_the_mse_doubling_loss():
    finding = claims.bd_psnr_bound(claims.Sources(fusion=fusion_file()))
    assert finding.values["learned codec fast"] == pytest.approx(-2.0)
    assert finding.values["learned codec medium"] == pytest.approx(-2.5)
    assert finding.verdict == claims.HOLDS_OURS
    worse = fusion_file()
    for row in worse["rows"]:
        if row["method"] == "enhance:fast:auto":
            row["psnr"] -= 1.5  # 3.5 dB below the decode
    finding = claims.bd_psnr_bound(claims.Sources(fusion=worse))
    assert finding.verdict == claims.FAILS and finding.why.startswith("learned codec fast lose")


def test_sigma_sweep_monotone_and_flattening():
    src = claims.Sources(fusion=fusion_file())
    assert claims.sigma_monotone(src).verdict == claims.HOLDS_OURS
    flat = claims.flattening(src)
    # decode -> sigma 0.1: 20 (q1) and 12 (q2) SWD over 1 dB; sigma 0.1 -> auto: 10 and 6 over 1 dB
    assert flat.values["first"] == pytest.approx(16.0) and flat.values["last"] == pytest.approx(8.0)
    assert flat.verdict == claims.HOLDS_OURS


def test_fusion_claims():
    src = claims.Sources(fusion=fusion_file())
    zero = claims.tau_zero(src)
    assert zero.values == {"same": 4, "pairs": 4} and zero.verdict == claims.HOLDS_OURS
    rate = claims.rate_unchanged(src)
    assert rate.values == {"same": 12, "rows": 12} and rate.verdict == claims.HOLDS
    assert claims.tau_realism(src).verdict == claims.HOLDS_OURS
    assert claims.tau_tradeoff(src).verdict == claims.HOLDS_OURS
    within = claims.psnr_within_1db(src)
    assert within.values["tau"] == 1.0 and within.values["bd_psnr"] == pytest.approx(-0.5)
    # PSNR that rises with tau is no trade-off; SWD that rises with tau is no realism gain
    bumped = claims.Sources(fusion=fusion_file(tau_psnr=(0.0, 0.25, 0.1), tau_swd=(100, 90, 95)))
    trade = claims.tau_tradeoff(bumped)
    assert trade.verdict == claims.FAILS and trade.values["max_rise_db"] == pytest.approx(0.25)
    assert claims.tau_realism(bumped).verdict == claims.FAILS
    # fuse:0 that differs from the decode fails the tau = 0 claim
    off = fusion_file(tau_psnr=(-0.01, 0.0, -0.5))
    assert claims.tau_zero(claims.Sources(fusion=off)).values["same"] == 0


def test_lpips_is_never_a_number_and_swd_bd_rate():
    finding = claims.lpips_bd_rate(claims.Sources(fusion=fusion_file()))
    assert finding.verdict == claims.OFFLINE and "LPIPS unavailable" in finding.ours
    # fuse:1 is as realistic at q1 (0.2 bpp) as the decode is at about q1.5: fewer bits, negative
    assert finding.values["tau"] == 1.0 and finding.values["bd_rate_swd"] < 0
    fid = claims.fid_comparisons(claims.Sources(fusion=fusion_file()))
    assert fid.verdict == claims.OFFLINE and fid.ours == "FID unavailable (cannot download inception.pth)"


def test_mse_doubling_from_calibration():
    entries = {"a": {"mse_ratio": 1.96, "mse_ratio_target": 2.0, "tol": 0.05},
               "b": {"mse_ratio": 2.08, "mse_ratio_target": 2.0, "tol": 0.05}}
    finding = claims.mse_doubling(claims.Sources(calibration=entries))
    assert finding.verdict == claims.HOLDS_OURS and finding.values["within"] == 1
    assert finding.values["min"] == 1.96 and finding.values["max"] == 2.08
    entries["c"] = {"mse_ratio": 2.5, "mse_ratio_target": 2.0, "tol": 0.05}
    assert claims.mse_doubling(claims.Sources(calibration=entries)).verdict == claims.FAILS


def test_nothing_measured_without_sources():
    table = claims.claims_table(claims.Sources())
    assert len(table) == len(claims.CLAIMS) == len({c.key for c in claims.CLAIMS})
    assert set(table.verdict) <= {claims.NOT_YET, claims.OFFLINE}
    assert all(c.measure in claims.MEASURES and c.quote and c.source for c in claims.CLAIMS)
    counts = claims.verdict_counts(table)
    assert sum(counts.values()) == len(claims.CLAIMS) and list(counts) == list(claims.VERDICTS)


def test_load_sources_reads_results_and_skips_unfinished(tmp_path):
    (tmp_path / claims.FUSION_RESULTS).write_text(json.dumps(fusion_file()))
    unfinished = results({"decode": 0.0, "enhance:fast:auto": -2.0}, codec="jpeg",
                         swd={(q, m): 1.0 for q in BPP for m in ("decode", "enhance:fast:auto")})
    unfinished["cells"] = unfinished["cells"][:1]
    (tmp_path / claims.JPEG_RESULTS).write_text(json.dumps(unfinished))
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"version": 1, "entries": {"x": {"mse_ratio": 2.0}}}))
    src = claims.load_sources(tmp_path, calibration=calibration)
    assert src.fusion is not None and src.fusion["schema"] == SCHEMA
    assert src.jpeg is None and "has not finished" in src.names["jpeg"]
    assert src.calibration == {"x": {"mse_ratio": 2.0}}
    assert claims.fast_jpeg(src).verdict == claims.NOT_YET
    assert not math.isnan(claims.claims_table(src).shape[0])


def test_prose_and_figure_come_from_the_findings():
    import matplotlib

    matplotlib.use("Agg")
    table = claims.claims_table(claims.Sources())
    values = claims.prose_values(claims.evaluate(claims.Sources()), table)
    assert values["n_claims"] == str(len(claims.CLAIMS))
    assert values["fusion_tau"] == "not measured" and values["n_holds"] == "0"
    fig = claims.verdict_figure(table)
    bars = fig.axes[0].patches
    assert sum(b.get_width() for b in bars) == len(claims.CLAIMS)


def test_the_headline_figure_draws_a_panel_per_results_file():
    from percept.eval.claims import Sources, headline_figure, load_sources

    src = load_sources(Path(__file__).resolve().parents[1] / "results")
    fig = headline_figure(src)
    panels = [src.fusion, src.jpeg]
    assert len(fig.axes) == sum(p is not None for p in panels)
    # the learned codec's panel has one line per headline method its file holds, the decode dashed
    lines = fig.axes[0].get_lines()
    assert any(line.get_linestyle() == "--" for line in lines)
    assert headline_figure(Sources()) is None


def test_the_verdict_figure_writes_each_count_on_its_own_bar():
    from percept.eval.claims import claims_table, load_sources, verdict_figure

    table = claims_table(load_sources(Path(__file__).resolve().parents[1] / "results"))
    ax = verdict_figure(table).axes[0]
    bars = [(round(b.get_y() + b.get_height() / 2, 6), b.get_x() + b.get_width() / 2, b.get_width())
            for b in ax.patches if b.get_width() > 0]
    labels = [(round(t.get_position()[1], 6), t.get_position()[0], t.get_text()) for t in ax.texts]
    assert sorted(labels) == sorted((y, x, str(int(w))) for y, x, w in bars)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["paper 1", "paper 2"]


def _sweep_run(path: Path, records: dict) -> Path:
    """A stored chapter as papermill keeps glued values: one display output per record."""
    outputs = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": k, "mime_prefix": "x"}},
                "data": {"application/papermill.record/" + ("text/plain" if isinstance(v, float) else "text/markdown"):
                         repr(v) if isinstance(v, float) else v}}
               for k, v in records.items()]  # fmt: skip
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "", "outputs": outputs}]}))
    return path


@pytest.mark.parametrize("interp_swd, verdict", [(60.0, claims.HOLDS_OURS), (40.0, claims.FAILS)])
def test_interpolation_reads_the_stored_sweep_chapter(tmp_path, interp_swd, verdict):
    records = {"jpeg_ratio": 1.5, "jpeg_swd_sigma": 50.0, "jpeg_swd_interp": interp_swd,
               "jpeg_winner": "σ traversal", "percept_hyperprior_ratio": 2.0,
               "percept_hyperprior_swd_sigma": 64.0, "percept_hyperprior_swd_interp": 80.0}
    assert claims.chapter_records(_sweep_run(tmp_path / "02.ipynb", records)) == records
    (tmp_path / "full").mkdir()
    _sweep_run(tmp_path / "full" / "02_sigma_sweep.ipynb", records)
    found = claims.interpolation(claims.load_sources(tmp_path))
    assert found.verdict == verdict
    assert found.values["JPEG"] == {"mse_ratio": 1.5, "swd_sigma": 50.0, "swd_interp": interp_swd}
    assert "learned codec: SWD 64.0 (σ traversal) vs 80.0 (interpolation) at MSE ratio 2.00" in found.ours
    assert claims.interpolation(claims.Sources()).verdict == claims.NOT_YET


@pytest.mark.parametrize("sde_at_30, verdict", [(30.0, claims.HOLDS_OURS), (39.0, claims.FAILS)])
def test_solver_crossover_reads_the_stored_presets_chapter(tmp_path, sde_at_30, verdict):
    records = {"crossover_2_ode_swd": 45.0, "crossover_2_ode_std": 2.0, "crossover_2_sde_swd": 60.0,
               "crossover_2_sde_std": 3.0, "crossover_30_ode_swd": 36.0, "crossover_30_ode_std": 1.0,
               "crossover_30_sde_swd": sde_at_30, "crossover_30_sde_std": 2.0,
               "crossover_6_ode_swd": 40.0, "best_swd": 12.0}  # 6 lacks its SDE side: left out
    (tmp_path / "full").mkdir()
    _sweep_run(tmp_path / "full" / "04_presets.ipynb", records)
    found = claims.solver_crossover(claims.load_sources(tmp_path))
    assert found.verdict == verdict
    assert found.values == {2: "ODE", 30: "SDE" if verdict == claims.HOLDS_OURS else "ODE"}
    assert found.ours.startswith("2 NFE: ODE 45.0 vs SDE 60.0 (ODE); 30 NFE: ODE 36.0 vs SDE")
    assert claims.solver_crossover(claims.Sources()).verdict == claims.NOT_YET
