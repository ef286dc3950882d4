"""What every training loop here needs besides its loss: configs by name, checkpoints, logs, signals.

Checkpoints are `torch.save` dicts of tensors and plain Python values only, so that
`torch.load(..., weights_only=True)` reads them; they are written to a temporary file and renamed,
so a run killed mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from percept.core.precision import native_bf16
from percept.errors import PerceptError
from percept.hub.runs import CHECKPOINT, LOG, read_log
from percept.hub.zoo import thin


def packaged_config_names(prefix: str) -> list[str]:
    folder = resources.files("percept") / "configs"
    return sorted(
        p.name[:-5]
        for p in folder.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(".json")
    )


def read_config(name_or_path: str, prefix: str) -> dict:
    """A training config as a dict: a packaged name (e.g. 'prior-s') or a path to a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise PerceptError(f"config file {path} does not exist")
        return json.loads(path.read_text())
    res = resources.files("percept") / "configs" / f"{name_or_path}.json"
    if not res.is_file():
        names = ", ".join(packaged_config_names(prefix))
        raise PerceptError(
            f"unknown config {name_or_path!r}: choose one of {names} or give a path to a .json file"
        )
    return json.loads(res.read_text())


# A run started from published weights keeps their card here (history and commands before step 0
# of this run); `percept.training.publish.publish_run` merges it into the new card.
INHERITED_CARD = "inherited_card.json"


def lock_run(run_dir: Path):
    """Hold an exclusive lock on a run directory for as long as the returned file stays open.

    Two processes training into one directory would interleave their logs and overwrite each
    other's checkpoints; the second one gets a clear error instead. The lock (flock) is released
    by the OS when the process ends, so a killed run never leaves a stale lock behind."""

    handle = open(Path(run_dir) / ".lock", "a")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise PerceptError(
            f"another process is training in {run_dir}: wait for it, or stop it first"
        ) from None
    return handle


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def bf16_for(requested: bool, device, run_dir: Path | None = None, step: int = 0) -> bool:
    """The config's bf16 where the device computes it natively (`percept.enhancer.presets.native_bf16`);
    otherwise fp32, said on stderr and in the run's log (emulated bf16 is many times slower)."""

    if not requested or native_bf16(str(device)):
        return requested
    note = (
        f"bf16 requested, but this {torch.device(device).type} has no native bf16 (AVX512-BF16 or "
        "AMX on CPUs): training in fp32, since emulated bf16 is far slower"
    )
    print(f"percept train: note: {note}", file=sys.stderr)
    if run_dir is not None:
        append_log(run_dir, {"step": step, "precision": "fp32", "note": note})
    return False


def log_command(run_dir: Path, step: int) -> None:
    """Record this process's command line in the run's log, at the step it starts from (the
    program as its bare name, so a card reads `percept train ...`, not this machine's paths)."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
    append_log(run_dir, {"step": step, "command": " ".join(argv)})


def write_inherited_card(run_dir: Path, source, card: dict[str, Any]) -> None:
    """Keep the card of the published weights a new run starts from (`--init-from`), so the card
    this run exports continues its history and commands (`lineage` merges it)."""
    kept = ("name", "steps", "train_seconds", "images_seen", "commands", "command", "history")
    inherited = {"source": str(source), **{k: card[k] for k in kept if k in card}}
    (Path(run_dir) / INHERITED_CARD).write_text(json.dumps(inherited, indent=2) + "\n")


def lineage(run_dir: Path, batch_size: int, step: int) -> dict[str, Any]:
    """`commands`, `history` (held-out records; about 200 points of the loss curve) and
    `images_seen` of a run, preceded by those of the weights it started from (--init-from), so an
    exported run carries its whole training, also when it was itself started from an export."""
    run_dir = Path(run_dir)
    log = read_log(run_dir)
    commands = [r["command"] for r in log if "command" in r]  # every command line, in order
    history = {"val": [r for r in log if "val_psnr" in r], "loss": [r for r in log if "loss" in r]}
    images_seen = step * batch_size
    inherited = run_dir / INHERITED_CARD
    if inherited.is_file():
        source = json.loads(inherited.read_text())
        before = source.get("history", {})
        history = {k: before.get(k, []) + history[k] for k in history}
        earlier = source.get("commands") or ([source["command"]] if source.get("command") else [])
        commands = earlier + commands
        start = int(source.get("steps", 0))
        # an older card without images_seen: its steps counted at this run's batch size
        images_seen = (
            int(source.get("images_seen", start * batch_size)) + (step - start) * batch_size
        )

    history["loss"] = thin(history["loss"])
    return {"commands": commands, "history": history, "images_seen": images_seen}


def tensor_digest(items) -> str:
    """sha256 (16 hex digits) of (label, tensor) pairs: labels and raw bytes, in the order given."""
    h = hashlib.sha256()
    for label, value in items:
        h.update(str(label).encode())
        h.update(value.detach().cpu().contiguous().numpy().data)
    return h.hexdigest()[:16]


def latest_val(run_dir: Path) -> dict[str, Any] | None:
    """The last validation record of a run's log, or None."""
    vals = [r for r in read_log(run_dir) if "val_psnr" in r]
    return vals[-1] if vals else None


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, step: int, decay: float) -> None:
    """EMA of the weights; the decay is ramped as min(decay, (1+t)/(10+t)) so early steps count."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1 - d)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def learning_rate(step: int, lr: float, warmup_steps: int, decay_start: int) -> float:
    """Linear warm-up, then constant, then inverse-square-root decay (EDM2, Karras et al. 2024 eq. 7).

    The inverse-sqrt tail has no fixed end, so a run can be resumed and extended indefinitely.
    """
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    return lr * warm / math.sqrt(max(step / max(1, decay_start), 1.0))


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag that the loop checks, so it can checkpoint and exit cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Timer:
    """Wall-clock seconds across resumes: `offset` is what earlier sessions spent."""

    def __init__(self, offset: float = 0.0) -> None:
        self.start, self.offset = time.monotonic(), offset

    def session(self) -> float:
        return time.monotonic() - self.start

    def total(self) -> float:
        return self.offset + self.session()


def config_from_dict(cls, d: dict, kind: str):
    """Build a training-config dataclass from JSON, refusing unknown keys (a typo would otherwise
    silently train with a default)."""


    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise PerceptError(f"unknown {kind} config keys {unknown}: valid keys are {sorted(known)}")
    d = dict(d)
    if "scale_range" in d:
        d["scale_range"] = tuple(d["scale_range"])
    return cls(**d)


def config_to_dict(cfg) -> dict:
    """The JSON form of a training config (tuples as lists, so it compares equal after a reload)."""

    d = dataclasses.asdict(cfg)
    d["scale_range"] = list(cfg.scale_range)
    return d


def config_changes(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between a run's saved config and the one a resume was given. The
    `description` is prose, not a setting: editing it must not strand a run (the checkpoint keeps the
    text it started with)."""
    keys = (set(saved) | set(current)) - {"description"}
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def wall_seconds(rows: list[dict[str, Any]]) -> float:
    """A run's wall time over all its sessions, from its log rows (elapsed_s restarts at a resume)."""
    total, previous = 0.0, 0.0
    for r in rows:
        if "elapsed_s" in r:
            total += r["elapsed_s"] - previous if r["elapsed_s"] >= previous else r["elapsed_s"]
            previous = r["elapsed_s"]
    return total


def cropped_config(cls, data: dict, kind: str):
    """`config_from_dict` for configs that crop images for a hyperprior codec: crop sizes must be
    multiples of 64 (g_a downsamples by 16 and h_a by 4 more: other sizes misalign y with h_s's
    output)."""
    cfg = config_from_dict(cls, data, kind)
    if cfg.crop % 64 or cfg.val_crop % 64:
        raise PerceptError(
            f"crop ({cfg.crop}) and val_crop ({cfg.val_crop}) must be multiples of 64"
        )
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options as a dict; VALUE is read as JSON where it parses, else a string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise PerceptError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
