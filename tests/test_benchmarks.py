"""The benchmark scripts stay runnable as the library changes under them: each one parses `--help`
after importing everything it uses, and the SWD benchmark runs its equality check on a tiny grid."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_script_starts(script):
    run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


def test_swd_speed_finds_the_shared_computation_identical(capsys):
    spec = importlib.util.spec_from_file_location("swd_speed", BENCHMARKS[0].parent / "swd_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--images", "3", "--size", "48", "--methods", "2", "--resamples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("numbers identical") == 2 and "ratio" in out
