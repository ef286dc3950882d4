"""Every setting a book profile asks for is one the library runs without a warning, checked in
seconds without running a chapter: sigma "auto" has a calibration table entry for its codec,
quality, model and setting key (consistency settings their own, not the plain setting's with a
warning), and a consistency model is never asked for a sigma above the top of its distillation.

The settings each chapter derives from its parameters are spelled out below, chapter by chapter;
a new chapter that enhances codec outputs adds its rule here.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from percept.cli import book
from percept.codecs.registry import codec_names
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.table import CalibrationMissing, lookup_sigma
from percept.eval.harness import parse_method
from percept.hub import zoo

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("tiny", "full")


@dataclass(frozen=True)
class Setting:
    chapter: str
    codec: str
    quality: int
    model: str
    key: str  # an EnhancerConfig key
    sigma: float | str  # a number, "auto", or ("auto", scale) as a float multiple of auto

    def __str__(self) -> str:
        return f"{self.chapter}: {self.codec}/q{self.quality}/{self.model}/{self.key} at sigma {self.sigma}"


def notebook_defaults(name: str) -> dict:
    """The values of a notebook's parameters cell (plain literals)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def model_for(key: str, p: dict) -> str:
    return (
        p["consistency_model"]
        if EnhancerConfig.from_key(key).uses_consistency_model
        else p["prior"]
    )


def chapter_settings(name: str, p: dict) -> list[Setting]:
    """The (codec, quality, model, setting, sigma) runs chapter `name` makes with parameters p."""
    out: list[Setting] = []

    def add(codec, quality, key, sigma, model=None):
        out.append(Setting(name, codec, int(quality), model or model_for(key, p), key, sigma))

    if name == "02_sigma_sweep":
        for codec, qualities in p["settings"].items():
            for q in qualities:
                for preset in p["presets"]:
                    for s in p["sigmas"]:
                        add(codec, q, preset, float(s))
                add(codec, q, p["interp_preset"], float(max(p["sigmas"])))
        for preset in p["consistent_presets"]:
            for q in p["settings"].get("jpeg", []):
                for s in p["consistent_sigmas"]:
                    add("jpeg", q, f"{preset}+consistency", float(s))
    elif name == "04_presets":
        for method in p["methods"]:
            key = method if isinstance(method, str) else f"{method[0]}@{method[1]}"
            model = (
                p["consistency_model"]
                if EnhancerConfig.from_key(key).uses_consistency_model
                else p["prior"]
            )
            add(p["codec"], p["quality"], key, float(p["sigma"]), model)
    elif name == "05_failure_cases":
        for s in p["sigmas"]:
            add(p["codec"], p["quality"], p["preset"], float(s))
        for scale in p["low_rate_scales"]:
            add(p["codec"], p["low_rate_quality"], "fast", ("auto", float(scale)))
        for codec, qualities in p["level_settings"].items():
            for q in qualities:
                add(codec, q, "fast", "auto")
                if codec == "jpeg":  # the fast preset's sigma, projected; medium at its own
                    add(codec, q, "fast+consistency", ("auto-of", "fast"))
                    add(codec, q, "medium+consistency", "auto")
    elif name in ("06_main_tables", "07_latent_fusion"):
        if name == "06_main_tables":
            runs = [(p["codecs"], p["methods"])]
            if "jpeg" in p["codecs"]:
                runs.append(({"jpeg": p["codecs"]["jpeg"]}, p["consistent_methods"]))
        else:
            methods = [f"enhance:fast:{s:g}" for s in p["fast_sigmas"]] + ["enhance:fast:auto"]
            methods += ["enhance:medium:auto"] if p["medium"] else []
            runs = [({"percept-hyperprior": p["qualities"]}, methods)]
        for codecs, methods in runs:
            for method in methods:
                parsed = parse_method(method)
                if parsed[0] != "enhance":
                    continue
                _, config, sigma = parsed
                for codec, qualities in codecs.items():
                    for q in qualities:
                        add(codec, q, config.key, sigma if sigma == "auto" else float(sigma))
    return out


def profile_settings(profile: str) -> list[Setting]:
    settings = []
    for kodak in (True, False):
        sections = book.load_profile(ROOT, profile, kodak=kodak)
        for name, section in sections.items():
            # chapter 07 names its models in the call, not as parameters
            fixed = {"prior": "percept-prior-s", "consistency_model": "percept-cm-s"}
            params = {**fixed, **notebook_defaults(name), **section}
            settings += chapter_settings(name, params)
    return list(dict.fromkeys(settings))


@functools.cache
def sigma_max(model: str) -> float | None:
    top = zoo.resolve(model)[1].get("sigma_max")
    return float(top) if top is not None else None


def problems_of(setting: Setting) -> list[str]:
    """Why the library would warn or fail on this setting (empty when it runs clean)."""
    config = EnhancerConfig.from_key(setting.key)
    if setting.codec not in codec_names():
        return [f"{setting}: unknown codec"]
    if config.consistency and setting.codec != "jpeg":
        return [f"{setting}: a consistency setting needs JPEG's cells"]
    sigma = setting.sigma
    try:
        if sigma == "auto":
            sigma = lookup_sigma(setting.codec, setting.quality, setting.model, config)
        elif isinstance(sigma, tuple) and sigma[0] == "auto":
            sigma = sigma[1] * lookup_sigma(setting.codec, setting.quality, setting.model, config)
        elif isinstance(sigma, tuple):  # another setting's calibrated sigma
            sigma = lookup_sigma(setting.codec, setting.quality, setting.model, sigma[1])
    except CalibrationMissing as exc:
        return [f"{setting}: {exc}"]
    if config.uses_consistency_model:
        top = sigma_max(setting.model)
        if top is not None and sigma > top * (1 + 1e-6):
            return [
                f"{setting}: sigma {sigma:.3g} is above {top:g}, the top of {setting.model}'s "
                "distillation (the library warns)"
            ]
    return []


@pytest.mark.parametrize("profile", (*PROFILES, "paper", "paper-tiny"))
def test_profile_parameters_are_the_notebooks_parameters(profile):
    for kodak in (True, False):
        for name, section in book.load_profile(ROOT, profile, kodak=kodak).items():
            unknown = set(section) - set(notebook_defaults(name))
            assert not unknown, f"{profile}.yaml, {name}: no such parameter(s) {sorted(unknown)}"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_setting_of_the_profile_runs_without_a_warning(profile):
    settings = profile_settings(profile)
    assert any(s.sigma == "auto" for s in settings) or profile == "tiny"
    problems = [p for s in settings for p in problems_of(s)]
    assert not problems, f"profile {profile}:\n" + "\n".join(problems)


def test_the_check_catches_the_known_failures():
    """The two kinds of setting that stopped `make book` in issue 23 are reported (JPEG q20's
    medium+consistency was one until it was calibrated; q25 has no entry)."""
    missing = Setting("06", "jpeg", 25, "percept-prior-s", "medium+consistency", "auto")
    too_high = Setting("06", "jpeg", 5, "percept-cm-s", "fast+consistency", "auto")
    assert "no calibrated sigma" in " ".join(problems_of(missing))
    assert "above 2" in " ".join(problems_of(too_high))
    assert problems_of(Setting("06", "jpeg", 15, "percept-cm-s", "fast", "auto")) == []
