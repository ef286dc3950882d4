"""The calibration table: the sigma of paper 1's rule, measured once per setting and kept as data.

`src/percept/weights/calibration.json` maps "codec/q<quality>/<prior>/<setting key>" (the key of an
`EnhancerConfig`: `medium`, `medium@20`, `fast+consistency`, ...) to the sigma and how it was
obtained, including the sha256 of the model's weights and, for the project's learned codecs, of the
codec's weights: an entry measured on other weights than those now published under either name is
refused as stale (recalibrate), never applied silently. `percept.enhancer.calibrate` measures
entries; `percept calibrate` fills the table.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path

from percept.codecs.jpeg_consistency import PLANES
from percept.codecs.project import PROJECT_CODECS
from percept.enhancer.presets import EnhancerConfig, as_config
from percept.errors import PerceptError
from percept.hub.zoo import recorded_sha256


class CalibrationMissing(PerceptError):
    """No calibrated sigma for this (codec, quality, prior, setting)."""


def table_path() -> Path:
    return Path(str(resources.files("percept") / "weights" / "calibration.json"))


def calibration_key(codec: str, quality: int | None, prior: str, config: EnhancerConfig | str) -> str:
    return f"{codec}/q{quality}/{prior}/{as_config(config).key}"


def calibrate_command(codec: str, quality: int | None, prior: str, config: EnhancerConfig) -> str:
    """The command that measures the entry for this setting."""
    base = config.sampler or config.preset
    extra = f" --steps {config.steps}" if config.steps is not None else ""
    extra += f" --zeta {config.zeta:g}" if config.zeta is not None else ""
    extra += " --consistency" if config.consistency else ""
    option = "--sampler" if config.sampler else "--preset"
    return f"`percept calibrate --codec {codec} --quality {quality} --prior {prior} {option} {base}{extra}`"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"version": 1, "entries": {}}


def store_sigma(
    codec: str,
    quality: int | None,
    prior: str,
    config: EnhancerConfig | str,
    sigma: float,
    info: dict | None = None,
    *,
    path: Path | None = None,
) -> dict:
    """Record a calibrated sigma (and `info`: ratio reached, images, seed, ...) in the table."""
    path = Path(path) if path is not None else table_path()
    table = _read(path)
    entry = {"sigma": float(sigma), **(info or {})}
    codec_hash = codec_sha256(codec, quality)  # which codec weights it was measured on
    if codec_hash:
        entry.setdefault("codec_sha256", codec_hash)
    table["entries"][calibration_key(codec, quality, prior, config)] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(table, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the table ships inside the package
    os.replace(tmp, path)
    return entry


def model_sha256(prior: str) -> str | None:
    """The recorded sha256 of a zoo name or weights file (None for other kinds of prior)."""
    try:
        return recorded_sha256(prior)
    except (OSError, ValueError):
        return None


def codec_sha256(codec: str, quality: int | None) -> str | None:
    """The recorded sha256 of a project codec's weights at `quality` (None for Pillow/external
    codecs, whose behaviour is fixed by their name and quality)."""
    name = PROJECT_CODECS.get(codec, {}).get(quality)
    if name is None:
        return None
    try:
        return recorded_sha256(name)
    except (OSError, ValueError):
        return None


def lookup_sigma(
    codec: str, quality: int | None, prior: str, config: EnhancerConfig | str, *, path: Path | None = None
) -> float:
    """The calibrated sigma, or CalibrationMissing saying the command that makes it (also when the
    entry was calibrated on other weights than those `prior` names now)."""
    table = _read(Path(path) if path is not None else table_path())
    config = as_config(config)
    key = calibration_key(codec, quality, prior, config)
    command = calibrate_command(codec, quality, prior, config)
    if key not in table["entries"]:
        raise CalibrationMissing(
            f"no calibrated sigma for {key}: run {command} or pass --sigma VALUE"
        )
    entry = table["entries"][key]
    recorded, current = entry.get("model_sha256"), model_sha256(prior)
    if recorded and current and recorded != current:
        raise CalibrationMissing(
            f"the calibrated sigma for {key} was measured on other weights (sha256 "
            f"{recorded[:12]}..., now {current[:12]}...): recalibrate with {command} or pass "
            "--sigma VALUE"
        )
    recorded, current = entry.get("codec_sha256"), codec_sha256(codec, quality)
    if current and recorded != current:
        measured = (
            f"codec weights sha256 {recorded[:12]}..." if recorded else "unrecorded codec weights"
        )
        raise CalibrationMissing(
            f"the calibrated sigma for {key} was measured on other {codec} weights ({measured}, "
            f"now {current[:12]}...): recalibrate with {command} or pass --sigma VALUE"
        )
    if config.consistency:
        if entry.get("projection") != PLANES:
            raise CalibrationMissing(
                f"the calibrated sigma for {key} was measured with an earlier consistency "
                f"projection ({entry.get('projection') or 'luma cells only'}; now {PLANES}): "
                f"recalibrate with {command} or pass --sigma VALUE"
            )
    return float(entry["sigma"])
