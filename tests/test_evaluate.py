"""The evaluation harness: complete rows, real bpp, resume, config checks, unavailable metrics, CLI."""

from __future__ import annotations

import json
import math

import pytest

from percept import cli
from percept.codecs import get_codec
from percept.codecs.container import encode_image
from percept.enhancer.presets import EnhancerConfig
from percept.errors import PerceptError
from percept.eval import harness as evaluate
from percept.eval.results import bd_table, load_results, strip_timings, summarize
from percept.hub.datasets import load_dataset

GRID = {"jpeg": [10, 40]}
OPTIONS = dict(crop="crop128", limit=2, swd_seeds=(0, 1), progress=False)


# Every test here runs with conftest's offline LPIPS/FID.
pytestmark = pytest.mark.usefixtures("offline_deep_metrics")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, offline_deep_metrics_for_module):
    out = tmp_path_factory.mktemp("fresh") / "r.json"
    return out, evaluate.run("skimage", GRID, out=out, **OPTIONS)


def test_rows_complete_and_bpp_from_file_bytes(fresh):
    out, results = fresh
    assert load_results(out) == json.loads(json.dumps(results))
    images = load_dataset("skimage", crop="crop128", limit=2)
    assert len(results["rows"]) == len(images) * 2
    for row in results["rows"]:
        assert set(row) >= {
            "image",
            "codec",
            "quality",
            "method",
            "bytes",
            "bpp",
            "psnr",
            "ms_ssim",
            "ssimulacra2",
            "decode_s",
        }
        image = next(i.image for i in images if i.name == row["image"])
        data = encode_image(image, get_codec(row["codec"], row["quality"]))
        assert row["bytes"] == len(data)
        assert row["bpp"] == pytest.approx(8 * len(data) / (128 * 128))
        assert row["ms_ssim"] is None  # 128 px is too small for five MS-SSIM scales
        assert 15 < row["psnr"] < 50 and row["decode_s"] > 0
    q10 = [r["bpp"] for r in results["rows"] if r["quality"] == 10]
    q40 = [r["bpp"] for r in results["rows"] if r["quality"] == 40]
    assert all(a < b for a, b in zip(q10, q40))
    assert results["schema"] == "percept.results/1" and "git_commit" in results["environment"]
    assert len(results["cells"]) == 2
    for cell in results["cells"]:
        assert cell["n"] == 2 and cell["swd"]["mean"] > 0 and len(cell["swd"]["per_seed"]) == 2
    for q in GRID["jpeg"]:
        for image in images:
            assert (
                out.parent / "r.images" / f"jpeg-q{q}" / "decode" / f"{image.name}.png"
            ).is_file()


def test_unavailable_metric_recorded_not_a_number(fresh):
    for cell in fresh[1]["cells"]:
        for name in ("lpips", "fid"):
            assert cell[name] == {"available": False, "reason": "weights not cached (test)"}
    assert "lpips" not in summarize(fresh[1]).columns


def test_resume_after_interruption_matches_uninterrupted(fresh, tmp_path):
    out = tmp_path / "r.json"

    def stop(done, name):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate.run("skimage", GRID, out=out, on_image=stop, **OPTIONS)
    partial = load_results(out)
    assert len(partial["rows"]) == 2 and partial["cells"] == []
    seen = []
    resumed = evaluate.run(
        "skimage", GRID, out=out, on_image=lambda d, n: seen.append(n), **OPTIONS
    )
    assert len(seen) == 1  # the first image was not redone
    assert resumed["rows"][:2] == partial["rows"]  # timings included: taken from the first run
    assert strip_timings(resumed) == strip_timings(fresh[1])
    again = evaluate.run("skimage", GRID, out=out, **OPTIONS)
    assert strip_timings(again) == strip_timings(fresh[1])


def test_config_mismatch_is_an_error_unless_overwrite(fresh, tmp_path):
    out = tmp_path / "r.json"
    out.write_text(fresh[0].read_text())
    with pytest.raises(PerceptError, match="different config.*codecs"):
        evaluate.run("skimage", {"jpeg": [10, 41]}, out=out, **OPTIONS)
    with pytest.raises(PerceptError, match="limit"):
        evaluate.run("skimage", GRID, out=out, **{**OPTIONS, "limit": 1})
    results = evaluate.run("skimage", {"jpeg": [41]}, out=out, overwrite=True, **OPTIONS)
    assert {r["quality"] for r in results["rows"]} == {41}


def test_bad_methods_and_specs():
    with pytest.raises(PerceptError, match="bad method"):
        evaluate.parse_method("enhance:fast")
    with pytest.raises(PerceptError, match="bad method"):
        evaluate.parse_method("interp:1.5")
    fast = EnhancerConfig("fast")
    assert evaluate.parse_method("enhance:fast:0.3") == ("enhance", fast, 0.3)
    projected = ("enhance", EnhancerConfig("fast", consistency=True), "auto")
    assert evaluate.parse_method("enhance:fast+consistency:auto") == projected
    assert evaluate.parse_method("enhance:fast:auto:consistent") == projected  # older files
    assert evaluate.parse_method("enhance:medium@20:0.1")[1].key == "medium@20"
    for bad in ("enhance:fast:nan", "enhance:fast:-1", "enhance:warp:0.3"):
        with pytest.raises(PerceptError, match="bad method|sigma|unknown preset"):
            evaluate.parse_method(bad)
    with pytest.raises(PerceptError, match="bad method"):
        evaluate.parse_method("enhance:fast:0.3:projected")
    with pytest.raises(PerceptError, match="NAME:Q1"):
        evaluate.parse_codecs(["jpeg"])
    assert evaluate.parse_codecs(["jpeg:5,15", "webp:30"]) == {"jpeg": [5, 15], "webp": [30]}
    with pytest.raises(PerceptError, match="--prior"):
        evaluate.run("skimage", GRID, ["decode", "enhance:fast:0.3"], out="unused.json")


@pytest.mark.parametrize(
    "args", [["--codecs", "nope:5"], ["--codecs", "jpeg"], ["--codecs", "jpeg:5", "--methods", "x"]]
)
def test_cli_exit_code_2(args, tmp_path, capsys):
    assert cli.main(["eval", "--dataset", "skimage", *args, "--out", str(tmp_path / "r.json")]) == 2
    assert "percept eval: error:" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_summary(fresh, capsys):
    assert cli.main(["eval", "summary", str(fresh[0])]) == 0
    text = capsys.readouterr().out
    assert "== jpeg ==" in text and "ssimulacra2" in text and "lpips: unavailable" in text


def _synthetic(codecs: dict[str, float]) -> dict:
    """Two codecs whose curves differ by a constant rate factor: BD-rate is that factor."""
    rows, cells = [], []
    for codec, factor in codecs.items():
        for q, (rate, quality, realism) in enumerate([(0.2, 26, 90), (0.4, 29, 70), (0.8, 32, 50)]):
            rows.append(
                {
                    "image": "a",
                    "codec": codec,
                    "quality": q,
                    "method": "decode",
                    "bytes": 1,
                    "bpp": rate * factor,
                    "psnr": quality,
                    "ssimulacra2": 50.0,
                    "decode_s": 0.1,
                }
            )
            cells.append(
                {
                    "codec": codec,
                    "quality": q,
                    "method": "decode",
                    "swd": {"mean": realism, "std": 1},
                }
            )
    return {
        "name": "s",
        "description": "",
        "config": {"codecs": {c: [0, 1, 2] for c in codecs}},
        "rows": rows,
        "cells": cells,
    }


def test_summarize_and_bd_table():
    results = _synthetic({"ref": 1.0, "half": 0.5})
    table = summarize(results)
    assert list(table.bpp[table.codec == "half"]) == pytest.approx([0.1, 0.2, 0.4])
    assert list(table.swd[table.codec == "ref"]) == [90, 70, 50]
    bd = bd_table(results).iloc[0]
    assert bd.codec == "half" and bd.reference == "ref"
    assert bd.bd_rate_psnr == pytest.approx(-50.0, abs=1e-6)
    assert bd.bd_rate_swd == pytest.approx(-50.0, abs=1e-6)
    assert bd_table(results, "half").iloc[0].bd_rate_psnr == pytest.approx(100.0, abs=1e-6)
    with pytest.raises(PerceptError, match="reference codec"):
        bd_table(results, "jpeg")
    single = _synthetic({"ref": 1.0, "one": 0.5})  # one point is no curve: NaN, not a number
    single["rows"] = [r for r in single["rows"] if r["codec"] == "ref" or r["quality"] == 0]
    assert math.isnan(bd_table(single).iloc[0].bd_rate_psnr)


def test_enhance_and_interp_methods_with_a_tiny_prior(tmp_path):
    import torch

    from percept.hub.zoo import save_weights
    from percept.models import EDMDenoiser, UNet, UNetConfig

    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)
    torch.manual_seed(0)
    net = UNet(cfg)
    card = {"kind": "prior", "arch": "unet-edm", "unet": cfg.to_dict(), "sigma_data": 0.5}
    prior = save_weights(EDMDenoiser(net).net.state_dict(), card, tmp_path / "toy.safetensors")
    methods = ["decode", "enhance:medium:0.2", "interp:0.5"]
    options = {**OPTIONS, "crop": "crop64", "limit": 1, "deep_metrics": (), "swd_seeds": (0,)}
    options["prior"] = str(prior)
    grid = {"jpeg": [10]}
    first = evaluate.run("skimage", grid, methods, out=tmp_path / "a.json", **options)
    again = evaluate.run("skimage", grid, methods, out=tmp_path / "b.json", **options)
    assert strip_timings(first)["rows"] == strip_timings(again)["rows"]  # seeded noise
    assert len(first["config"]["prior_sha256"]) == 64
    by = {(r["quality"], r["method"]): r for r in first["rows"]}
    for q in grid["jpeg"]:
        dec, enh, mix = (by[q, m] for m in methods)
        assert dec["bytes"] == enh["bytes"] == mix["bytes"]  # same file, different decoders
        assert enh["psnr"] != dec["psnr"] and enh["decode_s"] > dec["decode_s"]
        assert mix["decode_s"] >= enh["decode_s"]


def test_fast_methods_run_on_the_consistency_model(tmp_path):
    import torch

    from percept.hub.zoo import save_weights
    from percept.models import UNet, UNetConfig

    cfg = UNetConfig(channels=(8, 16), blocks=(1, 1), mid_blocks=1, emb_dim=16, groups=4)
    torch.manual_seed(0)
    state = UNet(cfg).state_dict()
    card = {"kind": "prior", "arch": "unet-edm", "unet": cfg.to_dict(), "sigma_data": 0.5}
    prior = save_weights(state, card, tmp_path / "toy.safetensors")
    cm_card = {**card, "kind": "cm", "arch": "unet-consistency", "sigma_min": 0.002}
    cm = save_weights(state, cm_card, tmp_path / "toy-cm.safetensors")
    methods = ["decode", "enhance:fast:0.3", "enhance:medium:0.3"]
    options = {**OPTIONS, "crop": "crop64", "limit": 1, "deep_metrics": (), "swd_seeds": (0,)}
    grid = {"jpeg": [10]}
    with pytest.raises(PerceptError, match="consistency model"):  # the prior cannot run "fast"
        evaluate.run("skimage", grid, methods, out=tmp_path / "a.json", prior=str(prior), **options)
    res = evaluate.run("skimage", grid, methods, out=tmp_path / "b.json", prior=str(prior),
                       consistency_model=str(cm), **options)  # fmt: skip
    assert len(res["config"]["consistency_model_sha256"]) == 64
    by = {r["method"]: r for r in res["rows"]}
    assert by["enhance:fast:0.3"]["psnr"] != by["decode"]["psnr"]
    # The same network as a prior (medium, 6 ODE steps) and as a CM (one step) differ.
    assert by["enhance:fast:0.3"]["psnr"] != by["enhance:medium:0.3"]["psnr"]
    with pytest.raises(PerceptError, match="fast presets"):
        evaluate.run("skimage", grid, ["decode", "enhance:medium:0.3"], out=tmp_path / "c.json",
                     prior=str(prior), consistency_model=str(cm), **options)  # fmt: skip
    # ":consistent" projects the same output into the JPEG's cells: same noise, less distortion
    both = ["decode", "enhance:medium:0.3", "enhance:medium:0.3:consistent"]
    res = evaluate.run("skimage", grid, both, out=tmp_path / "d.json", prior=str(prior), **options)
    by = {r["method"]: r for r in res["rows"]}
    assert by["enhance:medium:0.3:consistent"]["psnr"] > by["enhance:medium:0.3"]["psnr"]
    with pytest.raises(PerceptError, match="webp has none"):
        evaluate.run("skimage", {"jpeg": [10], "webp": [10]}, both, out=tmp_path / "e.json",
                     prior=str(prior), **options)  # fmt: skip


def test_method_table_gives_bd_gains_over_the_plain_decode():
    from percept.eval.results import method_table

    rows, cells = [], []
    for q, (rate, p, s) in enumerate([(0.2, 30.0, 50.0), (0.4, 32.0, 40.0), (0.8, 34.0, 30.0)], 1):
        for method, dp, ds, t in (
            ("decode", 0.0, 0.0, 0.01),
            ("enhance:medium:0.1", -1.0, -5.0, 2.0),
        ):
            rows.append({"codec": "jpeg", "quality": q, "method": method, "image": "a", "bytes": 10,
                         "bpp": rate, "psnr": p + dp, "decode_s": t})  # fmt: skip
            cells.append({"codec": "jpeg", "quality": q, "method": method,
                          "swd": {"mean": s + ds, "std": 1.0}})  # fmt: skip
    table = method_table({"rows": rows, "cells": cells}).set_index("method")
    assert table.loc["decode", "bd_psnr"] == 0.0
    assert table.loc["enhance:medium:0.1", "bd_psnr"] == pytest.approx(-1.0)
    assert table.loc["enhance:medium:0.1", "bd_swd"] == pytest.approx(
        5.0
    )  # positive: more realistic
    assert table.loc["enhance:medium:0.1", "decode_s"] == pytest.approx(2.0)


def test_the_committed_results_files_still_load():
    """Results files are data the book and the claims chapter read: a refactoring must not strand
    them (the schema name is the format's, not a module path)."""
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "results").glob("*.json"))
    harness = [p for p in files if "schema" in json.loads(p.read_text())]  # the harness's files
    assert "fusion-kodak.json" in [p.name for p in harness]
    for path in harness:
        results = load_results(path)
        assert results["rows"] and results["config"]["methods"]


def test_eval_refuses_an_output_path_it_cannot_write(tmp_path, capsys):
    for out, why in ((tmp_path, "is a directory"), (tmp_path / "no" / "r.json", "does not exist")):
        assert cli.main(["eval", "--codecs", "jpeg:5", "--out", str(out)]) == 2
        assert why in capsys.readouterr().err
