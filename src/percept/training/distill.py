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

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from percept.core.provenance import environment
from percept.core.schedules import karras_sigmas
from percept.errors import PerceptError
from percept.hub import runs
from percept.hub.runs import student_skeleton
from percept.hub.zoo import load_denoiser, resolve, save_weights
from percept.models import ConsistencyDenoiser, UNet, UNetConfig, count_parameters
from percept.models.lowrank import add_low_rank, delta_state, load_delta
from percept.training import loop, runtime
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


def scales(cfg: DistillConfig) -> Tensor:
    """The discretisation t_1 = sigma_min < ... < t_N = sigma_max, float32: EDM's schedule
    (`percept.core.schedules.karras_sigmas`, descending with a final 0) without the 0, ascending."""
    return karras_sigmas(cfg.num_scales, cfg.sigma_max, cfg.sigma_min, cfg.rho)[:-1].flip(0).float()


class ConsistencyLoss:
    """Consistency distillation (Song et al. 2023, Algorithm 2) with an L2 metric: for n ~ U{1..N-1}
    and x_{n+1} = x0 + t_{n+1} z, || f(x_{n+1}, t_{n+1}) - f_target(x_hat_n, t_n) ||^2 where x_hat_n is
    one Heun step of the teacher's ODE. n, then z, drawn from the loop's generator."""

    def __init__(self, teacher: nn.Module, target: nn.Module, sigmas: Tensor) -> None:
        self.teacher, self.target, self.sigmas = teacher, target, sigmas

    def __call__(self, student: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        dev, n_scales = x0.device, len(self.sigmas)
        n = torch.randint(0, n_scales - 1, (x0.shape[0],), generator=generator)
        t_lo, t_hi = self.sigmas[n].to(dev), self.sigmas[n + 1].to(dev)
        x_hi = x0 + t_hi.reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=generator).to(dev)
        x_lo = heun_step(self.teacher, x_hi, t_hi, t_lo)
        with torch.no_grad():
            y_target = self.target(x_lo, t_lo)
        return ((student(x_hi, t_hi) - y_target) ** 2).mean()


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
    if Path(teacher).is_dir():
        raise PerceptError(
            "a low-rank student ships as a patch on its teacher's published weights: publish the "
            f"teacher run {teacher} first (percept publish) and pass its zoo name or .safetensors"
        )
    path, card = resolve(teacher)  # a zoo name or a file; its sha256 checked against the file
    return {"base": str(path) if Path(teacher).exists() else teacher, "base_sha256": card["sha256"]}


class DistillTask(loop.Task):
    """Consistency distillation as a `loop.Task`: random crops, `ConsistencyLoss`, the target
    network's EMA (rate mu) after each step, the EMA's one-step held-out PSNR."""

    def __init__(self, cfg: DistillConfig, device: torch.device, teacher: nn.Module, run_dir: Path,
                 init_from: str | None) -> None:  # fmt: skip
        # the teacher's weights, whatever file or run they came from: a resume must find the same ones
        self.teacher_weights = runtime.tensor_digest(
            (name, value.float()) for name, value in sorted(teacher.state_dict().items())
        )
        torch.manual_seed(cfg.seed)
        student = _student_from_teacher(teacher, cfg).to(device)
        target = copy.deepcopy(student).requires_grad_(False)
        ema = copy.deepcopy(student).requires_grad_(False)
        trainable = [p for p in student.parameters() if p.requires_grad]
        schedule = loop.Schedule(
            steps=cfg.steps, seed=cfg.seed, log_every=cfg.log_every, val_every=cfg.val_every,
            grad_clip=cfg.grad_clip, checkpoint_minutes=cfg.checkpoint_minutes, bf16=cfg.bf16,
            ema_decay=cfg.ema_decay,
        )  # fmt: skip
        super().__init__(
            kind="cm", name=cfg.name, config=cfg.to_dict(), schedule=schedule, model=student,
            optimizer=torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.99)), params=trainable,
            ema=ema, modules={"target": target},
        )  # fmt: skip
        self.cfg, self.device, self.run_dir, self.init_from = cfg, device, run_dir, init_from
        self.warm, self.rewarm_from = None, None
        self.loss_fn = ConsistencyLoss(teacher, target, scales(cfg))
        self.images = load_split("train", cfg.train_images, min_side=cfg.crop)
        self.val_clean = center_crops(load_split("val", cfg.val_images, min_side=32), cfg.val_crop) * 2 - 1

    def restore(self, checkpoint):
        extra = checkpoint["extra"]
        if extra.get("teacher_weights", self.teacher_weights) != self.teacher_weights:
            raise PerceptError(
                f"{self.run_dir} was distilled from other weights than {self.cfg.teacher!r} holds"
                " now (was it republished?): restore those weights, or start a new run from this"
                " one's export with --init-from"
            )
        self.warm = extra.get("init_from")

    def fresh_start(self, generator):
        if self.init_from is None:
            return 0, 0.0
        self.warm = _warm_start(self.model, self.init_from, self.cfg, self.run_dir)
        self.modules["target"].load_state_dict(self.model.state_dict())
        self.ema.load_state_dict(self.model.state_dict())
        self.rewarm_from = self.warm["steps"]
        return self.warm["steps"], self.warm["train_seconds"]

    def extra(self):
        return {"unet": self.model.net.config.to_dict(), "init_from": self.warm,
                "teacher_weights": self.teacher_weights}  # fmt: skip

    def lr(self, step):
        lr = runtime.learning_rate(step, self.cfg.lr, self.cfg.warmup_steps, 10**9)
        if self.rewarm_from is not None:  # a fresh optimizer on warm weights: warm up again
            lr *= min(1.0, (step - self.rewarm_from + 1) / REWARM_STEPS)
        return lr

    def batch(self, generator):
        cfg, n = self.cfg, self.local_batch(self.cfg.batch_size)
        return random_crops(self.images, n, cfg.crop, generator, cfg.scale_range) * 2 - 1

    def loss(self, batch, generator, step):
        return self.loss_fn(self.forward_model, batch.to(self.device), generator), {}

    @torch.no_grad()
    def after_step(self, batch, generator, step):
        # theta^- <- stopgrad(mu theta^- + (1 - mu) theta)
        for pt, ps in zip(self.modules["target"].parameters(), self.model.parameters()):
            pt.lerp_(ps, 1 - self.cfg.mu)
        return {}

    def heldout(self):
        return {"val_psnr": validate(self.ema, self.val_clean, self.device)}


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
    """Distil (or resume distilling) a consistency model into `run_dir` with `loop.train`; returns a
    summary dict.

    `init_from` (a new run only) starts the student from a published consistency model instead of
    the teacher's weights: see `_warm_start`."""
    if cfg.teacher is None:
        raise PerceptError("no teacher given: pass --teacher RUN_DIR_OR_ZOO_NAME")
    if init_from is not None and resume:
        raise PerceptError("--init-from starts a new run; --resume continues one: pass only one")
    run = loop.Run(run_dir, resume=resume, device=device)
    teacher = load_denoiser(cfg.teacher).to(run.device)
    if cfg.lowrank_rank is not None:
        _base_of(cfg.teacher)  # fail now, not at export, if the teacher cannot be a base
    task = DistillTask(cfg, run.device, teacher, run.dir, init_from)
    result = loop.train(task, run, max_minutes=max_minutes, max_steps=max_steps, progress=progress)
    if export and run.world.main:
        export_model(run.dir, run.dir / "ema.safetensors")
    val = (result.heldout or {}).get("val_psnr")
    return {"step": result.step, "train_seconds": result.train_seconds, "val_psnr": val}


def export_model(run_dir: Path | str, out_path: Path | str) -> Path:
    """EMA weights of a distillation run as safetensors + JSON sidecar (kind 'cm')."""
    run_dir = Path(run_dir)
    ck = runs.read_checkpoint(run_dir)
    cfg = ck["config"]
    card = {
        "kind": "cm", "arch": "unet-consistency", "unet": ck["extra"]["unet"], "sigma_min": cfg["sigma_min"],
        "sigma_max": cfg["sigma_max"], "sigma_data": 0.5, "teacher": cfg["teacher"], "steps": int(ck["step"]),
        "data": f"imagenet-sample train split, {cfg['crop']}x{cfg['crop']} crops, scale {cfg['scale_range']}; "
        f"targets from the teacher's ODE",
        "train_seconds": round(float(ck["train_seconds"]), 1), "training_config": cfg,
        "val_psnr": (runtime.latest_val(run_dir) or {}).get("val_psnr"),
        **runtime.lineage(run_dir, cfg["batch_size"], int(ck["step"])),
        "environment": environment(),
    }  # fmt: skip
    card["params"] = count_parameters(UNet(UNetConfig.from_dict(ck["extra"]["unet"])))
    if ck["extra"].get("init_from"):  # a warm start: its first init_from["steps"] steps were on its base
        card["init_from"] = ck["extra"]["init_from"]
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
