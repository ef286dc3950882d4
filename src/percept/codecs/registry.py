"""The codec registry: names -> factories, with availability checked at run time.

Other modules add codecs with `register_codec(name, factory, info)`. The project's own trained
models live in `percept.codecs.project` (written separately): if that module exists it is imported
the first time the registry is used, and it registers its codecs at import.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from percept.codecs.base import Codec
from percept.errors import CodecError

# Module -> the function in it that registers its codecs, in the order `percept codecs` lists them.
# The project's trained codecs are a plugin: skipped when the module is missing; a broken module
# raises (no silent fallback).
BUILTIN_MODULES = {
    "percept.codecs.pillow": "register",
    "percept.codecs.external": "register",
    "percept.codecs.compressai_codec": "register",
}
PLUGIN_MODULES = {"percept.codecs.project": "register_project_codecs"}


@dataclass(frozen=True)
class CodecInfo:
    """What `percept codecs` shows. `reason` says why a codec is unavailable (empty when it is)."""

    name: str
    kind: str  # "pillow", "compressai", "external" or "project"
    quality_min: int
    quality_max: int
    default_quality: int
    quality_meaning: str
    description: str = ""
    available: bool = True
    reason: str = ""


InfoSource = CodecInfo | Callable[[], CodecInfo] | Mapping
_REGISTRY: dict[str, tuple[Callable[..., Codec], InfoSource]] = {}
_plugins_loaded = False


def register_codec(name: str, factory: Callable[..., Codec], info: InfoSource) -> None:
    """Add a codec. `factory(quality, **options) -> Codec`; `info` is a CodecInfo or a function
    returning one (so that availability, e.g. a binary on PATH, is checked when asked), or a
    mapping with CodecInfo's fields, where `qualities` (a list) may stand for the quality range."""
    if isinstance(info, Mapping):
        info = _info_from_mapping(name, info)
    _REGISTRY[name] = (factory, info)


def _info_from_mapping(name: str, info: Mapping) -> CodecInfo:
    qualities = list(info.get("qualities", ()))
    lo = int(info.get("quality_min", min(qualities) if qualities else 1))
    hi = int(info.get("quality_max", max(qualities) if qualities else lo))
    return CodecInfo(
        name=name,
        kind=str(info.get("kind", "project")),
        quality_min=lo,
        quality_max=hi,
        default_quality=int(info.get("default_quality", lo)),
        quality_meaning=str(info.get("quality_meaning", "model index")),
        description=str(info.get("description", info.get("weights", ""))),
        available=bool(info.get("available", True)),
        reason=str(info.get("reason", "")),
    )


def unregister_codec(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module, function in {**BUILTIN_MODULES, **PLUGIN_MODULES}.items():
        if module in BUILTIN_MODULES or importlib.util.find_spec(module) is not None:
            getattr(import_quietly(module), function)()


def import_quietly(module: str):
    """Import a module without the FutureWarning that importing compressai prints (its optional
    torch_geometric dependency calls the deprecated torch.jit.script at import, and imports
    tqdm.auto, which in a notebook without ipywidgets warns "IProgress not found"); a CLI error must
    stay one line, and a notebook's output shows no warning that is not the project's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message="IProgress not found")
        return importlib.import_module(module)


def codec_names() -> list[str]:
    _load_plugins()
    return list(_REGISTRY)


def codec_info(name: str) -> CodecInfo:
    _load_plugins()
    if name not in _REGISTRY:
        raise CodecError(
            f"unknown codec {name!r}: choose from {', '.join(_REGISTRY)} (see `percept codecs`)"
        )
    info = _REGISTRY[name][1]
    return info() if callable(info) else info


def list_codecs() -> list[CodecInfo]:
    """Every registered codec with its quality range and availability on this machine."""
    return [codec_info(name) for name in codec_names()]


def codec_options(name: str) -> set[str]:
    """The keyword options codec `name`'s factory accepts (besides quality)."""
    codec_info(name)
    params = list(inspect.signature(_REGISTRY[name][0]).parameters.values())[1:]
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def get_codec(name: str, quality: int | None = None, **options) -> Codec:
    """Build codec `name` at `quality` (its default when None). Raises CodecError for unknown names,
    out-of-range qualities, unknown options and codecs unavailable here."""
    info = codec_info(name)
    if quality is None:
        quality = info.default_quality
    if isinstance(quality, bool) or not isinstance(quality, int):
        shown = repr(quality) if len(repr(quality)) <= 40 else repr(quality)[:37] + "..."
        raise CodecError(f"quality must be an integer, got {shown}")
    if not info.quality_min <= quality <= info.quality_max:
        raise CodecError(
            f"quality {_short(quality)} is out of range for {name}: use {info.quality_min}..{info.quality_max} "
            f"({info.quality_meaning})"
        )
    if not info.available:
        raise CodecError(f"codec {name} is not available here: {info.reason}")
    factory = _REGISTRY[name][0]
    try:
        inspect.signature(factory).bind(quality, **options)
    except TypeError:
        accepted = [
            p.name
            for p in list(inspect.signature(factory).parameters.values())[1:]
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        raise CodecError(
            f"codec {name} does not take option(s) {', '.join(sorted(options))}: "
            f"it accepts {', '.join(accepted) or 'none'}"
        ) from None
    try:
        return factory(quality, **options)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        # an option of the wrong type or range (`--set method=abc`, a header parameter that is a
        # list): the factory's own checks are CodecErrors, these are the ones it did not foresee
        shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(options.items()))
        text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CodecError(f"codec {name}: bad option value ({shown}): {text}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
