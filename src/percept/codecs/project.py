"""The project's own learned codecs: CompressAI hyperprior architectures trained by `percept train codec`.

A trained codec is one self-describing safetensors file: the state dict *after*
`model.update(force=True)` (so the entropy coder's quantized CDF tables travel with the weights and a
reloaded model decodes bit-exactly what the trainer's model encodes) and, in the file's metadata under
`percept-codec`, the JSON config that says how to rebuild the network (architecture, N, M, quality,
lambda) and how it was trained. The project zoo (`percept.hub.zoo`) records such files with their sha256;
this module turns a file into a `CompressionModel` and registers the trained family in the codec
registry as `percept-hyperprior` (qualities 1..4, lambdas of CompressAI's MSE zoo qualities 1..4).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from percept.codecs import CompressAICodec, register_codec
from percept.codecs.registry import import_quietly
from percept.core.images import new_file_mode
from percept.errors import CodecError, WeightsUnavailable
from percept.hub import zoo

if TYPE_CHECKING:
    from compressai.models import CompressionModel

# Architecture names used in configs -> classes of `compressai.models` (Balle et al. 2018 scale
# hyperprior; Minnen et al. 2018 mean-scale hyperprior without the autoregressive context model).
# Named, not imported: compressai takes seconds to import, and registering the codecs (which every
# `percept decode` does, JPEG files included) must not pay for it.
ARCHITECTURES: dict[str, str] = {
    "mean-scale-hyperprior": "MeanScaleHyperprior",
    "scale-hyperprior": "ScaleHyperprior",
}

METADATA_KEY = "percept-codec"

# Registry name -> quality -> zoo entry name. The zoo entry names equal the training config names
# (src/percept/configs/codec-hyperprior-q{k}.json), so `percept train codec --config NAME` and the zoo
# entry that holds its result share one name.
PROJECT_CODECS: dict[str, dict[int, str]] = {
    "percept-hyperprior": {q: f"codec-hyperprior-q{q}" for q in (1, 2, 3, 4)},
}


def build_model(architecture: str, N: int, M: int) -> CompressionModel:
    """A fresh, untrained network of the named architecture."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown codec architecture {architecture!r}: choose from {', '.join(ARCHITECTURES)}"
        )

    models = import_quietly("compressai.models")
    return getattr(models, ARCHITECTURES[architecture])(N=N, M=M)


def save_trained_codec(
    model: CompressionModel, config: dict, path: str | os.PathLike, *, half: bool = False
) -> Path:
    """Write the state dict and config to one safetensors file (atomically).

    The caller must have run `model.update(force=True)` so that the CDF tables are current; the
    tables are buffers, so they are part of the state dict. `half` stores the parameters as float16
    (the loader copies them into float32 parameters); buffers (CDF tables, the Gaussian conditional's
    scale table) keep their dtype, since rounding them would change the coder.
    """

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:  # parameters only: buffers such as the scale table must keep their exact values
        params = {name for name, _ in model.named_parameters()}
        state = {
            k: v.half() if k in params and v.is_floating_point() else v for k, v in state.items()
        }
    if not any(k.endswith("_quantized_cdf") and v.numel() > 0 for k, v in state.items()):
        raise ValueError("the model has no CDF tables: call model.update(force=True) before saving")
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(config, sort_keys=True)})
    os.chmod(tmp, new_file_mode())  # safetensors creates the file private: give the umask's mode
    os.replace(tmp, path)
    return path


def read_codec_config(path: str | os.PathLike) -> dict:
    """The config JSON stored in a trained codec file's metadata."""

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if METADATA_KEY not in meta:
        raise WeightsUnavailable(
            f"{path} is not a percept codec file (no {METADATA_KEY!r} metadata)"
        )
    return json.loads(meta[METADATA_KEY])


def load_trained_codec(
    path: str | os.PathLike, device: str = "cpu"
) -> tuple[CompressionModel, dict]:
    """Rebuild the network from a trained codec file; returns (model in eval mode, config)."""

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(
            f"codec weights {path} not found: train them with `percept train codec`"
        )
    config = read_codec_config(path)
    model = build_model(config["architecture"], config["N"], config["M"])
    # CompressionModel.load_state_dict resizes the (initially empty) CDF buffers to the stored tables.
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), config


def project_codec_path(name: str, quality: int) -> Path:
    """The weights file of a registered project codec, resolved through the project zoo."""
    if name not in PROJECT_CODECS:
        raise CodecError(f"unknown project codec {name!r}: choose from {', '.join(PROJECT_CODECS)}")
    entries = PROJECT_CODECS[name]
    if quality not in entries:
        raise CodecError(f"{name} has qualities {min(entries)}..{max(entries)}, not {quality}")
    return Path(zoo.weights_path(entries[quality]))


def load_project_model(name: str, quality: int, device: str = "cpu") -> CompressionModel:
    """The trained network behind `name` at `quality`, from the project zoo."""
    model, _ = load_trained_codec(project_codec_path(name, quality), device=device)
    return model


def _factory(name: str):
    def make(quality: int):
        path = project_codec_path(name, quality)
        try:
            stamp = path.stat()
            key = (str(path), stamp.st_mtime_ns, stamp.st_size)
        except OSError:  # missing weights: load_trained_codec says so in one line
            key = None
        if key is not None and key in _CODECS:
            return _CODECS[key]
        codec = CompressAICodec(load_trained_codec(path)[0], name, quality)
        if key is not None:
            _CODECS[key] = codec
        return codec

    return make


# Built codecs by weights file (path, mtime, size): decoding many files (an eval run, a batch of
# decodes) loads and tabulates each network once; a codec holds no per-file state.
_CODECS: dict[tuple, CompressAICodec] = {}


def register_project_codecs() -> None:
    """Add the project's trained codecs to the codec registry (called by percept.codecs on import)."""

    for name, entries in PROJECT_CODECS.items():
        info = {
            "kind": "learned (project-trained CompressAI mean-scale hyperprior, MSE)",
            "qualities": sorted(entries),
            "weights": "project zoo: " + ", ".join(entries.values()),
        }
        register_codec(name, _factory(name), info)


@torch.no_grad()
def roundtrip_is_exact(
    encoder: CompressionModel, decoder: CompressionModel, x: torch.Tensor
) -> bool:
    """True when `decoder` reproduces exactly what `encoder` decodes from its own bitstream.

    Both the strings and the reconstructions must match: the entropy decoder depends on the hyper
    decoder's scales (and means) through the CDF table indexes, so any drift shows up here.
    """
    a = encoder.compress(x)
    b = decoder.compress(x)
    if a["strings"] != b["strings"]:
        return False
    ref = encoder.decompress(a["strings"], a["shape"])["x_hat"]
    out = decoder.decompress(a["strings"], a["shape"])["x_hat"]
    return bool(torch.equal(ref, out))


def exported_codec_path(run_dir: str | os.PathLike) -> Path | None:
    """Where a `percept train codec` run exports its codec file (named after its config), or None
    when the directory has no run config."""
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        return None
    return Path(run_dir) / f"{json.loads(config.read_text())['name']}.safetensors"
