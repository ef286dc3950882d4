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

Under `torchrun` (`percept.core.distributed`) the same loop trains one run on several ranks with
PyTorch's DistributedDataParallel: the model's gradients are averaged over the ranks in its
backward (and those of a task's other optimizers before their step), every rank draws its own
crops and noise from its own generator (rank 0's seed is the config's, so a world of one is a plain
run), and the config's `batch_size` is the batch of one step over all ranks (`Task.local_batch`).
Rank 0 alone writes the config, log, checkpoints and held-out figures; a checkpoint keeps every
rank's generator, so a resume with as many ranks continues each rank's draws exactly. Stopping (a
signal, `max_minutes`) and wall-clock checkpoints are agreed by all ranks at the same step.
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

from percept.core import distributed
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
    world: distributed.World = field(default_factory=distributed.World)  # set by `train`
    replica: distributed.Replica | None = None  # the model under DDP, set by `train` on >1 rank

    @property
    def forward_model(self) -> nn.Module:
        """The model as `loss` calls it: itself, or on several ranks its DDP replica."""
        return self.model if self.replica is None else self.replica

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a step's `batch_size` crops (all of them on one rank)."""
        if batch_size % self.world.size:
            raise PerceptError(
                f"batch_size {batch_size} does not split over {self.world.size} ranks: use a"
                " multiple of the number of processes"
            )
        return batch_size // self.world.size

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
        # under torchrun: join the ranks; cuda becomes this rank's GPU
        self.world, self.device = distributed.init(device)
        self.dir = Path(run_dir)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PerceptError("--device cuda asked for, but torch sees no CUDA device here")
        if (self.dir / runs.CHECKPOINT).exists() and not resume:
            raise PerceptError(
                f"{self.dir} already holds a run: pass --resume to continue it, or choose another --out"
            )
        self.lock = None
        if self.world.main:  # the one writer (the other ranks read the checkpoint only)
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
    step = int(ck["step"])
    world, ranks = run.world, ck.get("ranks")
    if world.active and ranks is not None and len(ranks) == world.size:
        generator.set_state(ranks[world.rank]["generator"])  # each rank continues its own draws
        torch.set_rng_state(ranks[world.rank]["torch_rng"])
    elif world.rank == 0:
        generator.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
    else:  # written by another number of ranks: this rank draws afresh, from its seed and the step
        generator.manual_seed(distributed.rank_seed(task.schedule.seed, world.rank) + step)
        torch.manual_seed(distributed.rank_seed(task.schedule.seed, world.rank) + step + 1)
    if world.main and world.active and (ranks is None or len(ranks) != world.size):
        print(f"percept train: note: {run.dir} was checkpointed by {len(ranks or [0])} rank(s),"
              f" resumed by {world.size}: ranks above 0 draw afresh", file=sys.stderr)  # fmt: skip
    if run.device.type == "cuda" and ck.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ck["cuda_rng"])
    if world.main:
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
    s, dev, run_dir, world = task.schedule, run.device, run.dir, run.world
    task.world, main = world, world.main
    gen = torch.Generator().manual_seed(distributed.rank_seed(s.seed, world.rank))
    if world.rank > 0:  # the model was built from the same seed on every rank; now draw apart
        torch.manual_seed(distributed.rank_seed(s.seed, world.rank) + 1)
    if run.checkpoint is not None:
        step, offset, heldout = _resume(task, run, gen)
    else:
        if main:
            _write_config(run, task.config)
        step, offset = task.fresh_start(gen)
        heldout = None
    if world.active:  # rank 0's weights everywhere; gradients averaged over the ranks from here on
        task.replica = distributed.replicate(task.model, task.params, dev)
        for module in [m for m in (task.ema, *task.modules.values()) if m is not None]:
            distributed.broadcast_module(module)
        for opt in task.optimizers.values():
            opt.register_step_pre_hook(
                lambda o, args, kwargs: distributed.average_gradients(
                    [p for group in o.param_groups for p in group["params"]]
                )
            )
    first_step = step
    if main:
        runtime.log_command(run_dir, step)
    bf16 = runtime.bf16_for(s.bf16, dev, run_dir if main else None, step)
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
            if world.active:  # the terms of the whole step: the mean over the ranks
                row = dict(zip(row, distributed.mean_of(list(row.values()))))
            row.update(grad_norm=grad_norm, lr=task.optimizer.param_groups[0]["lr"])
            if main:
                runtime.append_log(run_dir, {"step": step, **row, **times()})
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            window.clear()

    def evaluate() -> dict:
        measure = task.heldout() if main else None  # rank 0 measures; the others wait for it
        measure = distributed.broadcast(measure)
        if main:
            runtime.append_log(run_dir, {"step": step, "kind": "val", **measure, **times()})
            tqdm.write(f"{task.name} step {step}: held-out {json.dumps(measure)}")
        return {"step": step, **measure}

    def checkpoint() -> None:
        ranks = distributed.gather(
            {"generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
        ) if world.active else None  # fmt: skip
        if not main:
            return
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
        if ranks is not None:
            state["ranks"] = ranks
        runtime.save_checkpoint(run_dir, state)

    if task.val_at_start and run.checkpoint is None:
        heldout = evaluate()
    bar = tqdm(total=stop_at, initial=step, desc=f"{task.kind} {task.name}",
               disable=not (progress and main), mininterval=0.5 if sys.stderr.isatty() else 60)  # fmt: skip
    with runtime.StopRequest() as stop:
        while step < stop_at:
            signalled, late = distributed.any_of(
                stop.requested, max_minutes is not None and timer.session() > 60 * max_minutes
            )
            if signalled:
                stopped_by = "signal"
                break
            if late:
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
            elif (
                s.checkpoint_minutes
                and distributed.any_of(timer.session() - last_ckpt > 60 * s.checkpoint_minutes)[0]
            ):
                checkpoint()
                last_ckpt = timer.session()
        if step >= s.steps:
            stopped_by = "schedule"
        flush_window()
        if step > first_step and (heldout or {}).get("step") != step:
            heldout = evaluate()  # the figure of the weights this session leaves
        checkpoint()
    distributed.barrier()  # no rank returns before the checkpoint is written
    bar.close()
    return Result(step, first_step, round(timer.total(), 1), timer.session(), heldout, stopped_by)
