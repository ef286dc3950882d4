"""Consistency distillation of the EDM prior (Song et al. 2023, Algorithm 2, "CD").

The student f_theta (same UNet as the teacher, consistency preconditioning, initialised from the
teacher's weights as in the paper) learns to map any point of a probability-flow ODE trajectory to
its start. Per step:
  1. noise levels sigma_min = t_1 < ... < t_N = sigma_max (EDM/Karras schedule, rho = 7);
  2. n ~ U{1..N-1}, x_{n+1} = x0 + t_{n+1} z;
  3. one Heun step of the teacher's ODE dx/dt = (x - D(x, t))/t from t_{n+1} to t_n gives x_hat_n;
  4. loss = || f_theta(x_{n+1}, t_{n+1}) - f_target(x_hat_n, t_n) ||^2 (L2 metric; LPIPS weights are
     not available offline), the target being an EMA of theta with rate mu (stop-gradient).
A second, slower EMA of theta is what gets evaluated and exported.
sigma_max defaults to 2.0 instead of 80: the enhancer starts from partial noise (sigma <= ~1).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from percept.errors import PerceptError
from percept.hub import runs
from percept.hub.runs import student_skeleton
from percept.models import ConsistencyDenoiser, UNet, UNetConfig, count_parameters
from percept.models.lowrank import add_low_rank, delta_state, load_delta
from percept.training import runtime
from percept.training.crops import center_crops, load_split, random_crops
from percept.training.prior import REWARM_STEPS, validate


@dataclass(frozen=True)
class DistillConfig:
    """One consistency-distillation run (see src/percept/configs/cm-*.json)."""

    name: str
    teacher: str | None = None  # run dir or zoo name; `--teacher` fills it in
    description: str = ""
    sigma_min: float = 0.002
    sigma_max: float = 2.0
    num_scales: int = 40  # N of the discretisation
    rho: float = 7.0
    mu: float = 0.95  # target-network EMA rate (the paper's CD setting)
    ema_decay: float = 0.999  # the evaluated/exported EMA
    crop: int = 64
    scale_range: tuple[float, float] = (1.0, 2.0)
    batch_size: int = 16
    steps: int = 50000
    lr: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    bf16: bool = True
    seed: int = 0
    train_images: int | None = None
    val_images: int = 50
    val_crop: int = 128
    log_every: int = 50
    val_every: int = 1000
    checkpoint_minutes: float = 5.0
    # None: the student is a full copy of the teacher's UNet. An int: the student is the teacher plus
    # rank-r weight deltas (percept.models.lowrank) and ships as a patch on the teacher's weights.
    lowrank_rank: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> DistillConfig:
        return runtime.config_from_dict(cls, d, "distill")

    def to_dict(self) -> dict:
        return runtime.config_to_dict(self)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """Ascending t_1 = sigma_min < ... < t_N = sigma_max (EDM eq. 5, reversed)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((lo + ramp * (hi - lo)) ** rho).float()


@torch.no_grad()
def heun_step(teacher: nn.Module, x: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
    """One Heun (2nd-order) step of the PF-ODE dx/dt = (x - D(x, t)) / t (EDM Algorithm 1)."""
    tf, tt = t_from.reshape(-1, 1, 1, 1), t_to.reshape(-1, 1, 1, 1)
    d = (x - teacher(x, t_from)) / tf
    x_euler = x + (tt - tf) * d
    d2 = (x_euler - teacher(x_euler, t_to)) / tt
    return x + (tt - tf) * (d + d2) / 2


def _student_from_teacher(teacher: nn.Module, cfg: DistillConfig) -> ConsistencyDenoiser:
    net = UNet(teacher.net.config)
    net.load_state_dict(teacher.net.state_dict())
    if cfg.lowrank_rank is not None:
        add_low_rank(net, cfg.lowrank_rank)
    return ConsistencyDenoiser(net, cfg.sigma_min, sigma_max=cfg.sigma_max)


def _warm_start(
    student: ConsistencyDenoiser, init_from: str, cfg: DistillConfig, run_dir: Path
) -> dict:
    """Load a published consistency model into a new student; returns its name, sha256, steps and
    training seconds (the new run continues both counts).

    A low-rank patch is applied on the *current* teacher: its factors and small vectors seed the
    new run, the big weights are the teacher's. This is how a patch is re-distilled after its prior
    was republished, in far fewer steps than from scratch. The source's card is kept as
    `inherited_card.json`, so the published card's history and commands start at step 0
    (`percept.training.publish.publish_run` merges it, as for a prior run started with --init-from)."""
    from safetensors.torch import load_file

    from percept.hub.zoo import resolve

    path, card = resolve(init_from)
    if card.get("kind") != "cm":
        raise PerceptError(
            f"--init-from {init_from}: not a consistency model (kind {card.get('kind')!r})"
        )
    if json.loads(json.dumps(card.get("unet"))) != json.loads(
        json.dumps(student.net.config.to_dict())
    ):
        raise PerceptError(f"--init-from {init_from}: its UNet differs from the teacher's")
    if card.get("lowrank_rank") != cfg.lowrank_rank:
        raise PerceptError(
            f"--init-from {init_from}: it has low-rank rank {card.get('lowrank_rank')}, "
            f"the config asks for {cfg.lowrank_rank}"
        )
    state = load_file(path)
    if cfg.lowrank_rank is None:
        student.net.load_state_dict({k: v.float() for k, v in state.items()})
    else:
        load_delta(student.net, state)
    runtime.write_inherited_card(run_dir, init_from, card)
    return {
        "name": str(init_from), "sha256": card["sha256"], "base": card.get("base"),
        "steps": int(card.get("steps", 0)), "train_seconds": float(card.get("train_seconds", 0.0)),
    }  # fmt: skip


def _base_of(teacher: str) -> dict:
    """Name and sha256 of the published teacher that a low-rank student is a patch on."""
    from percept.hub.zoo import resolve

    if Path(teacher).is_dir():
        raise PerceptError(
            "a low-rank student ships as a patch on its teacher's published weights: publish the "
            f"teacher run {teacher} first (percept publish) and pass its zoo name or .safetensors"
        )
    path, card = resolve(teacher)  # a zoo name or a file; its sha256 checked against the file
    return {"base": str(path) if Path(teacher).exists() else teacher, "base_sha256": card["sha256"]}


def train_distill(
    cfg: DistillConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    init_from: str | None = None,
    device: str = "cpu",
    export: bool = True,
    progress: bool = True,
) -> dict:
    """Distil (or resume distilling) a consistency model into `run_dir`; returns a summary dict.

    `init_from` (a new run only) starts the student from a published consistency model instead of
    the teacher's weights: see `_warm_start`."""
    from percept.hub.zoo import load_denoiser

    run_dir, dev = Path(run_dir), torch.device(device)
    if cfg.teacher is None:
        raise PerceptError("no teacher given: pass --teacher RUN_DIR_OR_ZOO_NAME")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PerceptError("--device cuda asked for, but torch sees no CUDA device here")
    if (run_dir / runtime.CHECKPOINT).exists() and not resume:
        raise PerceptError(
            f"{run_dir} already holds a checkpoint: pass --resume to continue it, or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = runtime.lock_run(run_dir)  # noqa: F841 - released when this function returns
    teacher = load_denoiser(cfg.teacher).to(dev)
    if cfg.lowrank_rank is not None:
        _base_of(cfg.teacher)  # fail now, not at export, if the teacher cannot be a base
    # the teacher's weights, whatever file or run they came from: a resume must find the same ones
    teacher_weights = runtime.tensor_digest(
        (name, value.float()) for name, value in sorted(teacher.state_dict().items())
    )
    torch.manual_seed(cfg.seed)
    student = _student_from_teacher(teacher, cfg).to(dev)
    warm = None
    if init_from is not None and resume:
        raise PerceptError("--init-from starts a new run; --resume continues one: pass only one")
    target = copy.deepcopy(student).requires_grad_(False)
    ema = copy.deepcopy(student).requires_grad_(False)
    trainable = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    step, offset = 0, 0.0
    if resume:
        ck = runs.read_checkpoint(run_dir)
        changed = runtime.config_changes(ck["config"], cfg.to_dict())
        if changed:
            raise PerceptError(
                f"{run_dir} was started with a different config or teacher (keys {changed}): resume"
                " with the same ones"
            )
        if ck.get("teacher_weights", teacher_weights) != teacher_weights:
            raise PerceptError(
                f"{run_dir} was distilled from other weights than {cfg.teacher!r} holds now (was it"
                " republished?): restore those weights, or start a new run from this one's export"
                " with --init-from"
            )
        for module, key in ((student, "model"), (target, "target"), (ema, "ema")):
            module.load_state_dict(ck[key])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        step, offset = int(ck["step"]), float(ck["train_seconds"])
        warm = ck.get("init_from")
    else:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    rewarm_from = None
    if init_from is not None:
        warm = _warm_start(student, init_from, cfg, run_dir)
        target.load_state_dict(student.state_dict())
        ema.load_state_dict(student.state_dict())
        step, offset = warm["steps"], warm["train_seconds"]
        rewarm_from = step
    runtime.log_command(run_dir, step)

    images = load_split("train", cfg.train_images, min_side=cfg.crop)
    val_clean = center_crops(load_split("val", cfg.val_images, min_side=32), cfg.val_crop)
    sigmas = karras_sigmas(cfg.num_scales, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    stop_at = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps
    timer, losses, last_val = runtime.Timer(offset), [], None
    val_step, first_step = None, step
    last_ckpt = timer.session()
    bf16 = runtime.bf16_for(cfg.bf16, dev, run_dir, step)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def checkpoint() -> None:
        runtime.save_checkpoint(run_dir, {
            "config": cfg.to_dict(), "unet": student.net.config.to_dict(), "step": step,
            "train_seconds": timer.total(), "model": student.state_dict(), "target": target.state_dict(),
            "ema": ema.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "init_from": warm, "teacher_weights": teacher_weights,
        })  # fmt: skip

    bar = tqdm(total=stop_at, initial=step, desc=f"distill {cfg.name}", disable=not progress,
               mininterval=0.5 if sys.stderr.isatty() else 60)  # fmt: skip
    with runtime.StopRequest() as stop:
        while step < stop_at and not stop.requested:
            if max_minutes is not None and timer.session() > 60 * max_minutes:
                break
            x0 = random_crops(images, cfg.batch_size, cfg.crop, cfg.scale_range, gen).to(dev)
            n = torch.randint(0, cfg.num_scales - 1, (cfg.batch_size,), generator=gen)
            t_lo, t_hi = sigmas[n].to(dev), sigmas[n + 1].to(dev)
            x_hi = x0 + t_hi.reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=gen).to(dev)
            for group in opt.param_groups:
                group["lr"] = runtime.learning_rate(step, cfg.lr, cfg.warmup_steps, 10**9)
                if rewarm_from is not None:  # a fresh optimizer on warm weights: warm up again
                    group["lr"] *= min(1.0, (step - rewarm_from + 1) / REWARM_STEPS)
            with autocast:
                x_lo = heun_step(teacher, x_hi, t_hi, t_lo)
                with torch.no_grad():
                    y_target = target(x_lo, t_lo)
                loss = ((student(x_hi, t_hi) - y_target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
            with torch.no_grad():  # theta^- <- stopgrad(mu theta^- + (1 - mu) theta)
                for pt, ps in zip(target.parameters(), student.parameters()):
                    pt.lerp_(ps, 1 - cfg.mu)
            runtime.ema_update(ema, student, step, cfg.ema_decay)
            step += 1
            bar.update(1)
            losses.append(loss.item())
            if step % cfg.log_every == 0:
                runtime.append_log(
                    run_dir,
                    {
                        "step": step,
                        "loss": sum(losses) / len(losses),
                        "train_seconds": round(timer.total(), 1),
                    },
                )
                losses = []
            if step % cfg.val_every == 0:
                last_val, val_step = validate(ema, val_clean, dev), step
                runtime.append_log(
                    run_dir,
                    {"step": step, "val_psnr": last_val, "train_seconds": round(timer.total(), 1)},
                )
            if timer.session() - last_ckpt > 60 * cfg.checkpoint_minutes:
                checkpoint()
                last_ckpt = timer.session()
        checkpoint()
    bar.close()
    if step > first_step and val_step != step:  # the held-out figure of the weights that ship
        last_val = validate(ema, val_clean, dev)
        runtime.append_log(
            run_dir, {"step": step, "val_psnr": last_val, "train_seconds": round(timer.total(), 1)}
        )
    if export:
        export_model(run_dir, run_dir / "ema.safetensors")
    return {"step": step, "train_seconds": round(timer.total(), 1), "val_psnr": last_val}


def export_model(run_dir: Path | str, out_path: Path | str) -> Path:
    """EMA weights of a distillation run as safetensors + JSON sidecar (kind 'cm')."""
    from percept.core.provenance import environment
    from percept.hub.zoo import save_weights

    run_dir = Path(run_dir)
    ck = runs.read_checkpoint(run_dir)
    cfg = ck["config"]
    card = {
        "kind": "cm", "arch": "unet-consistency", "unet": ck["unet"], "sigma_min": cfg["sigma_min"],
        "sigma_max": cfg["sigma_max"], "sigma_data": 0.5, "teacher": cfg["teacher"], "steps": int(ck["step"]),
        "data": f"imagenet-sample train split, {cfg['crop']}x{cfg['crop']} crops, scale {cfg['scale_range']}; "
        f"targets from the teacher's ODE",
        "train_seconds": round(float(ck["train_seconds"]), 1), "training_config": cfg,
        "val_psnr": (runtime.latest_val(run_dir) or {}).get("val_psnr"),
        **runtime.lineage(run_dir, cfg["batch_size"], int(ck["step"])),
        "environment": environment(),
    }  # fmt: skip
    card["params"] = count_parameters(UNet(UNetConfig.from_dict(ck["unet"])))
    if ck.get("init_from"):  # a warm start: its first init_from["steps"] steps were on its base
        card["init_from"] = ck["init_from"]
    if cfg.get("lowrank_rank") is None:
        state = {k.removeprefix("net."): v for k, v in ck["ema"].items()}
    else:
        student = student_skeleton(ck)
        student.load_state_dict(ck["ema"])
        state = delta_state(student.net)
        card.update(
            _base_of(cfg["teacher"]), arch="unet-consistency-lowrank",
            lowrank_rank=cfg["lowrank_rank"], stored_params=sum(v.numel() for v in state.values()),
        )  # fmt: skip
    return save_weights(state, card, Path(out_path))


def main(argv: list[str]) -> int:
    """`percept train distill --teacher RUN_DIR_OR_ZOO_NAME --config cm-s --out RUN_DIR`."""
    p = argparse.ArgumentParser(
        prog="percept train distill", description="Consistency distillation of the prior."
    )
    p.add_argument(
        "--teacher",
        help="teacher: a prior run directory, zoo name or .safetensors (overrides the config's)",
    )
    p.add_argument(
        "--config", required=True, help="packaged config name (e.g. cm-s) or a .json path"
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop when the run has done N steps in total"
    )
    p.add_argument(
        "--init-from",
        help="start a new run from a published consistency model (zoo name or .safetensors), e.g. "
        "percept-cm-s after its prior was republished",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv[2:])
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = runtime.read_config(args.config, "cm-")
    if args.teacher:
        raw["teacher"] = str(args.teacher)
    summary = train_distill(
        DistillConfig.from_dict(raw), args.out, resume=args.resume, max_minutes=args.max_minutes,
        max_steps=args.max_steps, init_from=args.init_from, device=args.device,
    )  # fmt: skip
    print(json.dumps(summary))
    return 0
