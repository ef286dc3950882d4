"""Golden decodes: a fast and a medium enhanced decode of one Kodak crop, pinned by the PNG's sha256.

The pins were recorded before the package was reshaped into layers (issue 21) and must not move
with any refactoring: the same file, prior, sigma rule and seed give the same PNG, byte for byte.

Float kernels differ between CPU instruction sets (oneDNN blocks its convolutions differently for
AVX2 and AVX-512), and a few of the 8-bit values then round the other way. So the exact hash is
asserted where the machine's kernels are the recorded ones (`torch.backends.cpu.get_cpu_capability()`
and the torch version), and elsewhere the PNG must match the recorded one to within one 8-bit level
on a tiny fraction of values, which no behavioural change passes.

Regenerate only for an intended change of output: `PERCEPT_GOLDEN_RECORD=1 pytest tests/test_golden.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from percept.cli import main

HERE = Path(__file__).parent / "data" / "golden"
CROP = HERE / "kodim23-crop.png"  # kodim23 (Kodak, released for unrestricted use), rows 180:276, cols 300:396
PINS = HERE / "pins.json"
RECORD = os.environ.get("PERCEPT_GOLDEN_RECORD") == "1"

DECODES = {
    "fast": ["--enhance", "fast", "--prior", "percept-cm-s", "--sigma", "auto"],
    "medium": ["--enhance", "medium", "--prior", "percept-prior-s", "--sigma", "auto"],
}


def _kernels() -> dict:
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "crop.prc"
    assert main(["encode", str(CROP), str(out), "--codec", "jpeg", "--quality", "20"]) == 0
    return out


@pytest.mark.parametrize("name", list(DECODES))
def test_golden_decode(name, encoded, tmp_path, one_thread):
    out = tmp_path / f"{name}.png"
    assert main(["decode", str(encoded), str(out), *DECODES[name], "--seed", "0"]) == 0
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    reference = HERE / f"{name}.png"
    if RECORD:
        pins = json.loads(PINS.read_text()) if PINS.exists() else {}
        pins[name] = {"sha256": digest, **_kernels()}
        PINS.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
        reference.write_bytes(out.read_bytes())
        return
    pin = json.loads(PINS.read_text())[name]
    if {k: pin[k] for k in _kernels()} == _kernels():
        assert digest == pin["sha256"], f"{name}: the decode's PNG changed on the recorded kernels"
        return
    got = np.asarray(Image.open(out), dtype=np.int16)
    want = np.asarray(Image.open(reference), dtype=np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert diff.max() <= 1, f"{name}: a value moved by {diff.max()} levels"
    assert (diff > 0).mean() < 0.01, f"{name}: {(diff > 0).mean():.2%} of values changed"
