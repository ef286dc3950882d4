"""Encoder-side sigma: the paper's MSE-doubling rule applied to each image, written into its file.

Paper 1 picks sigma where the enhanced MSE is twice the decoded MSE (eq. 14), measured over a
dataset; `percept.enhancer.calibrate` does the same on imagenet-sample crops and keeps a table. A table value
misses on images unlike its calibration set (chapter 02 of the book measures by how much). The
encoder has the original, so it can find
this image's sigma (`percept.enhancer.calibrate.sigma_for_image`) by running the decoder's enhancer itself,
and signal it in the file's header (tens of bytes, counted in bpp like every header byte):

    "enhance": [{"preset": "fast", "prior": "<first 8 hex digits of the prior's sha256>",
                 "sigma": 0.1963}, ...]

plus "seed", "target" (the MSE ratio aimed at) and "steps" where they are not 0, 2.0 and the
preset's own, and "consistency": true when the sigma was calibrated with the JPEG consistency
projection (`percept decode --consistency` uses only such entries, plain decodes only others).
An entry costs some tens of header bytes, which the file's bpp counts.
`percept decode --enhance P --prior NAME --sigma auto` uses the entry whose setting (the
`EnhancerConfig` key its preset, steps and consistency make) and prior match, with its seed, and
says so; without one it falls back to the calibration table (`resolve_sigma`). An entry for other
prior weights is never applied.
"""

from __future__ import annotations

import math
import sys

from torch import Tensor
from tqdm import tqdm

from percept.codecs import get_codec
from percept.codecs.base import operator_of
from percept.codecs.container import decode_file, pack
from percept.codecs.jpeg_consistency import projector_for
from percept.enhancer.calibrate import TargetOutOfReach, sigma_for_image
from percept.enhancer.pipeline import Enhancer, check_sigma
from percept.enhancer.presets import EnhancerConfig
from percept.enhancer.table import model_sha256
from percept.errors import PerceptError

HEADER_KEY = "enhance"
PRIOR_ID_DIGITS = 8


def prior_id(prior: str | None) -> str:
    """The first hex digits of a prior's recorded sha256 (a zoo name or exported weights)."""
    sha = model_sha256(prior) if prior else None
    if not sha:
        raise PerceptError(
            f"signalling a sigma needs a prior with a recorded sha256 (a zoo name or weights exported "
            f"by percept), so a decoder can check it has the same one; {prior!r} has none"
        )
    return sha[:PRIOR_ID_DIGITS]


def _entries(params: dict) -> list[dict]:
    entries = params.get(HEADER_KEY, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PerceptError(f"corrupted header: {HEADER_KEY!r} is not a list of objects")
    return entries


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def entry_key(entry: dict) -> str | None:
    """The setting key of a header entry (its preset, steps and consistency); None when the entry
    names no setting this version knows."""
    try:
        return EnhancerConfig(
            entry.get("preset"), entry.get("steps"), consistency=bool(entry.get("consistency"))
        ).key
    except (PerceptError, TypeError):
        return None


def _same_setting(entry: dict, key: str, pid: str) -> bool:
    return entry.get("prior") == pid and entry_key(entry) == key


def signalled_entry(record, enhancer: Enhancer) -> tuple[dict | None, str | None]:
    """(entry, None) when the file signals a sigma for the enhancer's setting and the model it
    runs; else (None, why not) -- why is None when the file signals nothing."""
    entries = _entries(record.params)
    if not entries:
        return None, None
    key, name = enhancer.config.key, enhancer.model_name
    try:
        pid = prior_id(name)
    except PerceptError:
        return None, f"the file signals a sigma, but {name!r} has no recorded sha256 to match"
    for entry in entries:
        if _same_setting(entry, key, pid):
            sigma, seed = entry.get("sigma"), entry.get("seed", 0)
            if not _number(sigma) or not 0 < sigma < math.inf:
                raise PerceptError(f"corrupted header: signalled sigma {sigma!r} is not positive")
            if not _number(seed) or not isinstance(seed, int) or seed < 0:
                raise PerceptError(f"corrupted header: signalled seed {seed!r} is not a seed")
            return {**entry, "seed": seed, "target": entry.get("target", 2.0)}, None
    have = ", ".join(f"{entry_key(e) or e.get('preset')}/prior {e.get('prior')}" for e in entries)
    return None, f"the file signals a sigma for {have}, not for {key} with prior {pid} ({name})"


def resolve_sigma(
    enhancer: Enhancer, record, sigma: float | str = "auto", seed: int | None = None
) -> tuple[float, int]:
    """(sigma, seed) for decoding `record` with `enhancer`: a number is used as given; "auto" takes
    the sigma signalled in the file for this setting and model (with the encoder's seed unless
    `seed` is given), else the calibration table's. Which one was used is said on stderr."""
    if sigma != "auto":
        if isinstance(sigma, str):
            try:
                sigma = float(sigma)
            except ValueError:
                raise PerceptError(f"sigma must be 'auto' or a number, got {sigma!r}") from None
        return check_sigma(sigma), 0 if seed is None else int(seed)
    entry, why_not = signalled_entry(record, enhancer)
    if entry is not None:
        print(
            f"percept decode: sigma {entry['sigma']:g} signalled in the file (calibrated on this "
            f"image for {enhancer.config.key} with {enhancer.model_name}, seed {entry['seed']})",
            file=sys.stderr,
        )
        return float(entry["sigma"]), entry["seed"] if seed is None else int(seed)
    if why_not:
        print(f"percept decode: note: {why_not}; using the calibration table", file=sys.stderr)
    return enhancer.table_sigma(record.codec, record.quality), 0 if seed is None else int(seed)


def signal_sigma(
    data: bytes,
    x: Tensor,
    enhancer: Enhancer,
    *,
    seed: int = 0,
    target: float = 2.0,
    tol: float = 0.02,
    codec_options: dict | None = None,
    progress: bool = False,
) -> tuple[bytes, dict]:
    """Calibrate sigma on this image (the original `x`, [1,3,H,W] in [0,1]) for decoding `data` (a
    percept file) with `enhancer`, and return (the file with the entry added, the entry with the
    MSE ratio it reaches). An entry for the same setting and model is replaced; others are kept.
    `progress` shows a bar over the bisection's trials (each one a full enhancement of the image).
    A consistency setting (JPEG files) calibrates with the file's consistency projection, as
    `percept decode --consistency` runs it."""
    config = enhancer.config
    if config.sampler is not None:
        raise PerceptError("a signalled sigma names a preset: use one (with --steps if needed)")
    pid = prior_id(enhancer.model_name)
    x_hat, record = decode_file(data, **(codec_options or {}))
    if tuple(x.shape[-2:]) != (record.height, record.width):
        raise PerceptError(
            f"the original is {x.shape[-2]}x{x.shape[-1]} but the file holds a "
            f"{record.height}x{record.width} image"
        )
    project = projector_for(record.codec, record.payload) if config.consistency else None
    operator = None
    if config.schedule.needs_differentiable_codec:
        codec = get_codec(record.codec, record.quality, **(codec_options or {}))
        operator = operator_of(codec)

    bar = tqdm(desc=f"signal sigma ({config.key})", unit="trial", disable=not progress)

    def run(sigma: float) -> Tensor:
        bar.set_postfix(sigma=f"{sigma:g}")
        y = enhancer(x_hat, sigma, seed=seed, operator=operator, project=project)
        bar.update()
        return y

    try:
        sigma, ratio = sigma_for_image(run, x.float(), x_hat, target, tol=tol)
    except TargetOutOfReach as exc:
        why = (
            "the file's quantisation cells cap the distortion of a consistent output near twice "
            "the decode's"
            if config.consistency
            else "the enhancer cannot move this image that far from its decode"
        )
        raise PerceptError(
            f"{exc} ({why}): signal a lower target with --target-ratio (the gate's band starts at "
            "1.7), or pass --sigma VALUE when decoding"
        ) from None
    finally:
        bar.close()
    entry = {"preset": config.preset, "prior": pid, "sigma": sigma}
    for key, value, default in (
        ("seed", int(seed), 0),
        ("target", target, 2.0),
        ("steps", config.steps, None),
        ("consistency", config.consistency, False),
    ):
        if value != default:
            entry[key] = value
    params = dict(record.params)
    kept = [e for e in _entries(params) if not _same_setting(e, config.key, pid)]
    params[HEADER_KEY] = kept + [entry]
    out = pack(record.codec, params, record.height, record.width, record.payload)
    return out, {"seed": int(seed), "target": target, **entry, "mse_ratio": ratio}
