"""Shared fixtures; `slow` and `gpu` tests are skipped unless asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if not os.environ.get("PERCEPT_DATA"):
    candidate = ROOT.parent / "shared" / "data"
    if candidate.is_dir():
        os.environ["PERCEPT_DATA"] = str(candidate)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    for marker, option in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(option) or marker in markexpr:
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: run with {option} or -m {marker}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    from percept.data import kodak_dir as find

    folder = find()
    if folder is None:
        pytest.skip("Kodak not found: set PERCEPT_DATA to a folder with kodak/kodim01.png ...")
    return folder


@pytest.fixture(scope="session")
def kodim23(kodak_dir):
    from percept.images import load_image

    return load_image(kodak_dir / "kodim23.png")[0]


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small tensor ops lose most of their time to thread
    contention on a shared 2-core machine, and bit-exact comparisons need one reduction order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
