"""The model zoo: trained weights as data (CompressAI `zoo/` style).

`src/percept/weights/zoo.json` maps a name to {file, sha256, kind, arch, config, card}; the weights
are safetensors files beside it, each with a JSON sidecar (`<file>.json`) holding the same card, so a
file copied on its own still says what it is. `load_denoiser` accepts a zoo name, a path to a
.safetensors file with its sidecar, or a training run directory (EMA of the latest checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from percept.core.images import new_file_mode
from percept.core.tiling import TiledDenoiser
from percept.errors import PerceptError, WeightsUnavailable
from percept.hub import runs, standins
from percept.models.build import build_denoiser
from percept.models.diffusers import from_pretrained
from percept.models.lowrank import merge_delta

KINDS = ("prior", "cm", "codec", "fusion")


def weights_dir() -> Path:
    return Path(str(resources.files("percept") / "weights"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_weights(state_dict: dict[str, Tensor], card: dict[str, Any], out_path: Path) -> Path:
    """Write `state_dict` as safetensors and `card` (plus the file's sha256) as its JSON sidecar."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp, metadata={"kind": str(card.get("kind", ""))})
    os.replace(tmp, out_path)
    os.chmod(out_path, new_file_mode())  # mkstemp creates 0600; give what the umask gives
    card = {**card, "sha256": sha256_file(out_path)}
    sidecar_path(out_path).write_text(json.dumps(card, indent=2) + "\n")
    return out_path


def thin(rows: list, points: int = 200) -> list:
    """Every k-th row, so that about `points` rows of a training curve travel in a model card."""
    return rows[:: max(1, len(rows) // points)]


def read_registry(registry: Path | None = None) -> dict[str, dict]:
    path = registry or weights_dir() / "zoo.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def publish(
    name: str,
    kind: str,
    state_dict: dict[str, Tensor],
    card: dict[str, Any],
    *,
    folder: Path | None = None,
) -> dict:
    """Save weights as `<folder>/<name>.safetensors` and record them (with sha256) in zoo.json.

    Generic over model kinds: `card` must hold `arch` and whatever the loader of that kind needs
    to rebuild the model (e.g. `unet` for priors), plus training facts (steps, hardware, metrics).
    """
    if kind not in KINDS:
        raise PerceptError(f"unknown model kind {kind!r}: choose from {', '.join(KINDS)}")
    folder = Path(folder) if folder is not None else weights_dir()
    path = save_weights(
        state_dict, {**card, "kind": kind, "name": name}, folder / f"{name}.safetensors"
    )
    return register(name, kind, path, json.loads(sidecar_path(path).read_text()), folder=folder)


def register(name: str, kind: str, path: Path, card: dict[str, Any], *, folder: Path | None = None):
    """Record an existing weights file of `folder` (with its sha256 and card) in zoo.json."""
    if kind not in KINDS:
        raise PerceptError(f"unknown model kind {kind!r}: choose from {', '.join(KINDS)}")
    folder = Path(folder) if folder is not None else weights_dir()
    path = Path(path)
    if path.parent.resolve() != folder.resolve():
        raise PerceptError(f"{path} is not in the zoo folder {folder}")
    sha = sha256_file(path)
    registry = read_registry(folder / "zoo.json")
    registry[name] = {
        "file": path.name,
        "sha256": sha,
        "kind": kind,
        "arch": card.get("arch"),
        "card": {**card, "kind": kind, "name": name, "sha256": sha},
    }
    (folder / "zoo.json").write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    return registry[name]


def record_benchmark(name: str, key: str, result: dict, *, registry: Path | None = None) -> None:
    """Store a benchmark's result in a zoo entry's card (and its sidecar), so the book's model card
    shows the figures measured with exactly those weights (the sha256 is unchanged)."""
    path = registry or weights_dir() / "zoo.json"
    reg = read_registry(path)
    if name not in reg:
        raise WeightsUnavailable(f"no zoo entry {name!r} to record {key!r} in")
    reg[name]["card"][key] = result
    path.write_text(json.dumps(reg, indent=2, sort_keys=True) + "\n")
    side = sidecar_path(path.parent / reg[name]["file"])
    if side.is_file():
        card = json.loads(side.read_text())
        card[key] = result
        side.write_text(json.dumps(card, indent=2) + "\n")


def weights_path(name: str, *, registry: Path | None = None) -> Path:
    """The weights file of a zoo entry, after checking its recorded sha256."""
    if name not in read_registry(registry):
        raise WeightsUnavailable(
            f"no zoo entry {name!r}: train it (see the model cards in the book) and publish it"
        )
    return resolve(name, registry)[0]


def resolve(name_or_path: str | os.PathLike, registry: Path | None = None) -> tuple[Path, dict]:
    """(safetensors path, card) for a zoo name or a path; checks the recorded sha256."""
    path = Path(name_or_path)
    reg = read_registry(registry)
    if str(name_or_path) in reg and not path.exists():
        entry = reg[str(name_or_path)]
        folder = registry.parent if registry else weights_dir()
        path, expected, card = folder / entry["file"], entry["sha256"], entry["card"]
        if not path.is_file():
            raise WeightsUnavailable(
                f"zoo model {name_or_path!r}: weights file {path} is missing; reinstall percept or re-export it"
            )
    elif path.suffix == ".safetensors" and path.is_file():
        side = sidecar_path(path)
        if not side.is_file():
            raise PerceptError(
                f"{path} has no sidecar {side.name}: export it with percept.training.prior.export_model"
            )
        card = json.loads(side.read_text())
        expected = card.get("sha256")
    else:
        names = ", ".join(sorted(reg)) or "none published yet"
        raise WeightsUnavailable(
            f"no model {str(name_or_path)!r}: give a zoo name ({names}), a .safetensors file or a run directory"
        )
    actual = sha256_file(path)
    if expected != actual:
        raise PerceptError(
            f"{path} is corrupt or was replaced: sha256 {actual[:12]}... does not match the recorded "
            f"{str(expected)[:12]}...; re-publish it from its run with `percept publish RUN_DIR NAME` (or reinstall percept)"
        )
    return path, card


def recorded_sha256(name_or_path: str | os.PathLike, registry: Path | None = None) -> str | None:
    """The sha256 recorded for a zoo name or an exported .safetensors (its sidecar), without hashing
    the file (loading checks it); None for anything else (a run directory, a diffusers model)."""
    path = Path(name_or_path)
    reg = read_registry(registry)
    if str(name_or_path) in reg and not path.exists():
        return reg[str(name_or_path)]["sha256"]
    side = sidecar_path(path)
    if path.suffix == ".safetensors" and side.is_file():
        return json.loads(side.read_text()).get("sha256")
    return None


def load_weights_and_card(name_or_path: str | os.PathLike, *, registry: Path | None = None):
    """(state dict, card) of a zoo name or an exported .safetensors, after the sha256 check."""
    file, card = resolve(name_or_path, registry)
    return load_file(file), card


def is_diffusers_source(name_or_path: str | os.PathLike) -> bool:
    """Whether a model name is a diffusers model: `hf:ID` (the Hugging Face hub) or a local folder in
    diffusers' layout (a pipeline's model_index.json, or a scheduler config)."""
    path = Path(name_or_path)
    return str(name_or_path).startswith("hf:") or path.is_dir() and any(
        (path / f).exists() for f in ("model_index.json", "scheduler", "scheduler_config.json")
    )


def load_denoiser(name_or_path: str | os.PathLike, *, registry: Path | None = None) -> nn.Module:
    """A Denoiser (eval mode, CPU) from a zoo name, a .safetensors path, a training run directory, or
    a diffusers model (`hf:ID` or a local diffusers folder, as paper 1's priors are published).

    A model of fixed input size (a diffusers UNet's `sample_size`) is tiled with 1/8 overlap, so any
    image size works."""
    if is_diffusers_source(name_or_path):
        denoiser = from_pretrained(str(name_or_path).removeprefix("hf:"))
        stands_for = standins.standin_of(name_or_path)
        if stands_for:  # said in the output of whatever loaded it (the paper-tiny profile)
            print(standins.notice(str(name_or_path), stands_for), flush=True)
        size = getattr(denoiser, "sample_size", None)
        return TiledDenoiser(denoiser, int(size), int(size) // 8) if size else denoiser
    if runs.is_run_dir(name_or_path):
        return runs.load_run_denoiser(name_or_path)
    state, card = load_weights_and_card(name_or_path, registry=registry)
    if card.get("base"):  # a low-rank patch on a published prior (percept.models.lowrank)
        state = _apply_to_base(state, card, registry)
    model = build_denoiser(
        card["kind"],
        card["unet"],
        sigma_data=card.get("sigma_data", 0.5),
        sigma_min=card.get("sigma_min"),
        sigma_max=card.get("sigma_max"),
    )
    model.net.load_state_dict(state)
    return model.eval().requires_grad_(False)


def _apply_to_base(
    delta: dict[str, Tensor], card: dict, registry: Path | None
) -> dict[str, Tensor]:
    """The full weights of a model stored as a low-rank patch on the base model its card names."""
    base_file, base_card = resolve(card["base"], registry)  # checks the base file's own hash
    if base_card.get("sha256") != card["base_sha256"]:
        raise PerceptError(
            f"{card.get('name', 'this model')} was distilled from {card['base']} with sha256 "
            f"{card['base_sha256'][:12]}..., but that model's weights have changed since: re-distil "
            f"it from the current {card['base']} (percept train distill)"
        )
    return merge_delta(load_file(base_file), delta)
