"""The packaging files agree with each other and the test markers are wired as documented."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("percept")]
    return {_name(r): r.replace(" ", "") for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_environment_yml_lists_the_same_packages_and_pins_as_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_torch_and_torchvision_are_pinned_as_a_pair():
    reqs = _pyproject_requirements()
    assert reqs["torch"].startswith("torch==") and reqs["torchvision"].startswith("torchvision==")


def test_slow_and_gpu_markers_are_registered():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    names = {m.split(":")[0] for m in cfg["markers"]}
    assert {"slow", "gpu"} <= names
    assert "--strict-markers" in cfg["addopts"]


def test_installed_version_matches_pyproject():
    import percept

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert percept.__version__ == meta["version"]


def test_top_level_api_exports_functions():
    from percept import calibrate_sigma, enhance

    assert callable(enhance) and callable(calibrate_sigma)
    assert enhance.__name__ == "enhance" and calibrate_sigma.__name__ == "calibrate_sigma"
