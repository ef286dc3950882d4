"""Shipping finished training runs into the zoo: `percept publish RUN_DIR [NAME]`.

Each kind of run exports its own card and weights; this module puts them into the zoo folder with
their sha256 (`percept.hub.zoo.publish`), in float16 unless asked otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from percept.codecs.project import (
    exported_codec_path,
    load_trained_codec,
    roundtrip_is_exact,
    save_trained_codec,
)
from percept.errors import PerceptError, WeightsUnavailable
from percept.hub import runs, zoo
from percept.hub.zoo import publish, sidecar_path
from percept.training import distill, prior
from percept.training.fusion import publish_fusion
from percept.training.runtime import wall_seconds


def publish_any(run_dir: Path, name: str | None, *, folder=None, half: bool = True) -> dict:
    """Publish a run of any kind: a codec, a fusion module, a prior or a consistency model."""
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        raise PerceptError(f"{run_dir} is not a training run directory (no config.json)")
    spec = json.loads(config.read_text())
    if "architecture" in spec:
        return publish_codec(run_dir, name, folder=folder, half=half)
    if "aux_run" in spec:
        return publish_fusion(run_dir, name, folder=folder, half=half)
    if not name:
        raise PerceptError("give the zoo name to publish under, e.g. percept-prior-s")
    kind = runs.run_kind(runs.read_checkpoint(run_dir))
    return publish_run(run_dir, name, kind, folder=folder, half=half)


def publish_run(
    run_dir: Path | str,
    name: str,
    kind: str = "prior",
    *,
    folder: Path | None = None,
    half: bool = True,
) -> dict:
    """Export a training run's EMA weights and record them in the zoo (prior and cm runs).

    With `half` the shipped file stores float16 (half the size, so the package stays small); the
    loader copies them into float32 parameters. The card records the storage dtype; its commands
    and history (`percept.training.runtime.lineage`) reach back through --init-from starts."""
    run_dir = Path(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_run(run_dir, Path(tmp) / "model.safetensors")
        card = json.loads(sidecar_path(exported).read_text())
        card.pop("sha256")
        state = load_file(exported)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    card["storage_dtype"] = "float16" if half else "float32"
    card["source_run"] = str(run_dir)
    return publish(name, kind, state, card, folder=folder)


def export_run(run_dir: Path, out_path: Path) -> Path:
    """Export a prior or distillation run's EMA weights with its card (the exporter of its kind)."""
    kind = runs.run_kind(runs.read_checkpoint(run_dir))
    return (distill if kind == "cm" else prior).export_model(run_dir, out_path)


def _run_log(run_dir: Path) -> tuple[list[dict], float]:
    """A codec run's log rows and its wall time over all its sessions."""
    rows = [json.loads(line) for line in (run_dir / runs.LOG).read_text().splitlines() if line]
    return rows, wall_seconds(rows)


def publish_codec(
    run_dir: str | os.PathLike,
    name: str | None = None,
    *,
    folder: str | os.PathLike | None = None,
    half: bool = True,
    probe: torch.Tensor | None = None,
) -> dict:
    """Ship a finished `percept train codec` run: its codec file goes into the zoo folder and zoo.json.

    With `half` the weights are rounded to float16 and the CDF tables recomputed from the rounded
    weights, so the shipped file is half the size and still self-consistent; the round trip of the
    shipped file is checked bit-exact on `probe` (default: a fixed random 3x64x64 image). The card
    records the training config, held-out rate and PSNR, wall time and the loss/held-out history.
    """
    run_dir = Path(run_dir)
    run_config = json.loads((run_dir / "config.json").read_text())
    source = exported_codec_path(run_dir)
    if not source.is_file():
        raise WeightsUnavailable(
            f"{source} not found: finish the run (or stop it with --export) before publishing"
        )
    model, record = load_trained_codec(source)
    if half:
        with torch.no_grad():  # the values a float16 file holds; buffers are stored exactly
            for p in model.parameters():
                p.copy_(p.half().float())
    model.update(force=True)
    name = name or run_config["name"]
    folder = Path(folder) if folder is not None else zoo.weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    rows, seconds = _run_log(run_dir)
    losses = [r for r in rows if "loss" in r]
    # A fine-tuned rate carries the training of the runs it started from (init_from, recursively).
    lineage, total_steps, total_seconds = [], record["steps_trained"], seconds
    source = record.get("init_from")
    while source and Path(source).is_dir() and (Path(source) / "config.json").is_file():
        source_rows, source_seconds = _run_log(Path(source))
        source_steps = max((r["step"] for r in source_rows if "step" in r), default=0)
        lineage.append(
            {"run": str(source), "steps": source_steps, "train_seconds": round(source_seconds, 1)}
        )
        total_steps, total_seconds = total_steps + source_steps, total_seconds + source_seconds
        source = json.loads((Path(source) / "config.json").read_text()).get("init_from")
    card = {
        **record,
        "name": name,
        "arch": record["architecture"],
        "schedule_steps": record["steps"],
        "steps": total_steps,
        "steps_this_run": record["steps_trained"],
        "lineage": lineage,
        "params": sum(p.numel() for p in model.parameters()),
        "data": record.get("train_data"),
        "storage_dtype": "float16" if half else "float32",
        "train_seconds": round(total_seconds, 1),
        "source_run": str(run_dir),
        "history": {
            "val": [r for r in rows if r.get("kind") == "val"],
            "loss": [
                {k: r[k] for k in ("step", "loss", "bpp", "mse") if k in r}
                for r in zoo.thin(losses)
            ],
        },
    }
    path = save_trained_codec(model, card, folder / f"{name}.safetensors", half=half)
    shipped, _ = load_trained_codec(path)
    if probe is None:
        probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    if not roundtrip_is_exact(model, shipped, probe):
        path.unlink()
        raise WeightsUnavailable(
            f"{path} does not decode bit-exactly after reloading; not published"
        )
    return zoo.register(name, "codec", path, card, folder=folder)
