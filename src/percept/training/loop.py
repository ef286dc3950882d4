"""The one training loop of every kind of run (the shape of NVlabs/edm's `training_loop`).

A kind (prior, consistency distillation, codec, aux encoder, latent fusion) describes itself as a
`Task`: its model and optimizer, a batch source, a loss object, a held-out measure and, where it
has them, an EMA, extra modules and optimizers (a target network, a discriminator) and an
`after_step` for what follows the main optimizer step. `train` owns everything else, the same way
for all kinds: learning-rate setting, bf16 autocast (only where the device computes it natively),
gradient clipping, the optimizer step, the EMA, logging to log.jsonl, held-out evaluation every
`val_every` steps and at the end of every session, the progress bar, step and time limits,
SIGTERM/SIGINT (checkpoint, then stop) and checkpoints (atomic: a temporary file renamed).

Checkpoints have one set of keys (`percept.hub.runs` documents them and upgrades the two older
conventions on read). Log rows: `{"step", <loss terms averaged over the rows' window>, "grad_norm",
"lr", "train_seconds", "elapsed_s"}` for training and `{"step", "kind": "val", <measure>, ...}` for
held-out evaluations; `train_seconds` counts across resumes, `elapsed_s` restarts with each session
(`runtime.wall_seconds` sums it).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from percept.errors import PerceptError
from percept.hub import runs
from percept.training import runtime


@dataclass(frozen=True)
class Schedule:
    """The loop's settings, read from a kind's config."""

    steps: int
    seed: int
    log_every: int
    val_every: int
    grad_clip: float
    checkpoint_every: int | None = None  # in steps (codec and paper-2 stages)
    checkpoint_minutes: float | None = None  # in wall-clock minutes (prior and distillation)
    bf16: bool = False
    ema_decay: float = 0.999


@dataclass
class Task:
    """What one kind of run supplies to `train` (see the module docstring)."""

    kind: str  # checkpoint "kind": prior, cm, codec, aux-encoder, fusion
    name: str
    config: dict  # the config's JSON form: compared on --resume, written to config.json
    schedule: Schedule
    model: nn.Module
    optimizer: torch.optim.Optimizer
    params: list[Tensor]  # what the optimizer trains and the clipping sees
    ema: nn.Module | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    growable: tuple[str, ...] = ()  # config keys a resume may raise (a constant-lr schedule)
    val_at_start: bool = False  # measure the untrained model too (step 0 of a new run)

    def batch(self, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def loss(self, batch: Any, generator: torch.Generator, step: int) -> tuple[Tensor, dict]:
        """(loss to minimise, {term: value} to log)."""
        raise NotImplementedError

    def heldout(self) -> dict:
        raise NotImplementedError

    def lr(self, step: int) -> float | None:
        """The learning rate of `step`; None keeps the optimizer's."""
        return None

    def after_step(self, batch: Any, generator: torch.Generator, step: int) -> dict:
        """After the main optimizer step, before the EMA: further optimizers or networks."""
        return {}

    def fresh_start(self, generator: torch.Generator) -> tuple[int, float]:
        """A new run: initialise what is not random init; returns (first step, seconds so far)."""
        return 0, 0.0

    def restore(self, checkpoint: dict) -> None:
        """A resume: check and take the kind's own values (`extra`), before the weights load."""

    def extra(self) -> dict:
        """Plain values of this kind that a checkpoint keeps (under "extra")."""
        return {}

    def last_step(self, first_step: int) -> int | None:
        """A step at which this session must stop whatever the schedule (e.g. a cooldown)."""
        return None


@dataclass
class Result:
    step: int
    first_step: int
    train_seconds: float
    session_seconds: float
    heldout: dict | None  # the last held-out record ({"step", ...measure}), this session or before
    stopped_by: str  # "schedule", "limit" (max_steps, max_minutes) or "signal"


class Run:
    """An open run directory: locked, checked against --resume, its checkpoint read (or None)."""

    def __init__(self, run_dir: str | Path, *, resume: bool, device: str) -> None:
        self.dir, self.device = Path(run_dir), torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PerceptError("--device cuda asked for, but torch sees no CUDA device here")
        if (self.dir / runs.CHECKPOINT).exists() and not resume:
            raise PerceptError(
                f"{self.dir} already holds a run: pass --resume to continue it, or choose another --out"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = runtime.lock_run(self.dir)  # released when this object is collected
        self.checkpoint = (
            runs.read_checkpoint(self.dir) if resume and runs.is_run_dir(self.dir) else None
        )


def _write_config(run: Run, config: dict) -> None:
    (run.dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _truncate_log(run_dir: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a resume starts from (a run killed between two
    checkpoints), so that the log has no step twice."""
    path = run_dir / runs.LOG
    if path.is_file():
        rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in rows if json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in kept))


def _resume(task: Task, run: Run, generator: torch.Generator) -> tuple[int, float, dict | None]:
    ck = run.checkpoint
    changed = runtime.config_changes(ck["config"], task.config)
    growing = changed and set(changed) <= set(task.growable)
    if growing and task.config["steps"] >= ck["step"]:
        _write_config(run, task.config)  # the same run, continued to a later end
    elif changed:
        raise PerceptError(
            f"{run.dir} was started with a different config (keys {changed}): resume with the run's"
            " own config"
        )
    task.restore(ck)
    task.model.load_state_dict(ck["model"])
    if task.ema is not None:
        task.ema.load_state_dict(ck["ema"])
    for key, module in task.modules.items():
        module.load_state_dict(ck["modules"][key])
    task.optimizer.load_state_dict(ck["optimizer"])
    for key, opt in task.optimizers.items():
        opt.load_state_dict(ck["optimizers"][key])
    generator.set_state(ck["generator"])
    torch.set_rng_state(ck["torch_rng"])
    if run.device.type == "cuda" and ck.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ck["cuda_rng"])
    step = int(ck["step"])
    _truncate_log(run.dir, step)
    return step, float(ck["train_seconds"]), ck.get("heldout")


def train(
    task: Task,
    run: Run,
    *,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> Result:
    """Train `task` in the open `run` until its schedule ends, `max_steps` (the run's total),
    `max_minutes` of this session or a signal; always leaves a checkpoint."""
    s, dev, run_dir = task.schedule, run.device, run.dir
    gen = torch.Generator().manual_seed(s.seed)
    if run.checkpoint is not None:
        step, offset, heldout = _resume(task, run, gen)
    else:
        _write_config(run, task.config)
        step, offset = task.fresh_start(gen)
        heldout = None
    first_step = step
    runtime.log_command(run_dir, step)
    bf16 = runtime.bf16_for(s.bf16, dev, run_dir, step)
    stop_at = min(s.steps, max_steps) if max_steps is not None else s.steps
    if (last := task.last_step(first_step)) is not None:
        stop_at = min(stop_at, last)
    timer = runtime.Timer(offset)
    last_ckpt = timer.session()
    window: dict[str, list[float]] = {}
    grad_norm, stopped_by = None, "limit"

    def times() -> dict:
        return {
            "train_seconds": round(timer.total(), 1),
            "elapsed_s": round(timer.session(), 2),
        }

    def flush_window() -> None:
        if window:
            row = {k: sum(v) / len(v) for k, v in window.items()}
            row.update(grad_norm=grad_norm, lr=task.optimizer.param_groups[0]["lr"])
            runtime.append_log(run_dir, {"step": step, **row, **times()})
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            window.clear()

    def evaluate() -> dict:
        measure = task.heldout()
        runtime.append_log(run_dir, {"step": step, "kind": "val", **measure, **times()})
        tqdm.write(f"{task.name} step {step}: held-out {json.dumps(measure)}")
        return {"step": step, **measure}

    def checkpoint() -> None:
        state = {
            "format": runs.CHECKPOINT_FORMAT, "kind": task.kind, "config": task.config,
            "step": step, "train_seconds": timer.total(), "heldout": heldout,
            "model": task.model.state_dict(), "optimizer": task.optimizer.state_dict(),
            "modules": {k: m.state_dict() for k, m in task.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in task.optimizers.items()},
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "extra": task.extra(),
        }  # fmt: skip
        if task.ema is not None:
            state["ema"] = task.ema.state_dict()
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        runtime.save_checkpoint(run_dir, state)

    if task.val_at_start and run.checkpoint is None:
        heldout = evaluate()
    bar = tqdm(total=stop_at, initial=step, desc=f"{task.kind} {task.name}", disable=not progress,
               mininterval=0.5 if sys.stderr.isatty() else 60)  # fmt: skip
    with runtime.StopRequest() as stop:
        while step < stop_at:
            if stop.requested:
                stopped_by = "signal"
                break
            if max_minutes is not None and timer.session() > 60 * max_minutes:
                break
            lr = task.lr(step)
            if lr is not None:
                for group in task.optimizer.param_groups:
                    group["lr"] = lr
            batch = task.batch(gen)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss, terms = task.loss(batch, gen, step)
            task.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(task.params, s.grad_clip))
            task.optimizer.step()
            terms = {"loss": loss, **terms, **task.after_step(batch, gen, step)}
            if task.ema is not None:
                runtime.ema_update(task.ema, task.model, step, s.ema_decay)
            step += 1
            bar.update(1)
            for key, value in terms.items():
                window.setdefault(key, []).append(
                    value.item() if isinstance(value, Tensor) else float(value)
                )
            if step % s.log_every == 0:
                flush_window()
            if step % s.val_every == 0:
                heldout = evaluate()
            if s.checkpoint_every and step % s.checkpoint_every == 0:
                checkpoint()
            elif s.checkpoint_minutes and timer.session() - last_ckpt > 60 * s.checkpoint_minutes:
                checkpoint()
                last_ckpt = timer.session()
        if step >= s.steps:
            stopped_by = "schedule"
        flush_window()
        if step > first_step and (heldout or {}).get("step") != step:
            heldout = evaluate()  # the figure of the weights this session leaves
        checkpoint()
    bar.close()
    return Result(step, first_step, round(timer.total(), 1), timer.session(), heldout, stopped_by)
