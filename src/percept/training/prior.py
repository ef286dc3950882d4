"""Train the project's diffusion prior with the EDM objective (Karras et al. 2022, section 5).

Loss: E_{sigma, x0, eps} lambda(sigma) || D(x0 + sigma eps; sigma) - x0 ||^2 with
lambda = 1 / c_out^2, i.e. an unweighted MSE on the network's own target (EDM eq. 8 and Table 1).

Noise levels: ln(sigma) ~ N(P_mean, P_std^2). EDM uses P_mean = -1.2 for generation from pure noise;
the enhancer here only ever starts from partial noise, sigma ~ 0.02-1.0 in [-1,1] units, so the
default centres on sigma = 0.2 (P_mean = ln 0.2 = -1.61) with P_std = 1.0: 95% of the draws fall in
[0.028, 1.42], the range used, with the tails still trained for multi-step schedules.

The run directory holds checkpoint.pt, log.jsonl (`percept.training.loop`: the training loss every
`log_every` steps, held-out one-step PSNR of the EMA every `val_every` steps) and, at every exit,
ema.safetensors with a JSON sidecar (`export_model`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from percept.core.provenance import environment
from percept.errors import PerceptError
from percept.hub import runs
from percept.hub.zoo import load_weights_and_card, save_weights
from percept.models import EDMDenoiser, count_parameters
from percept.models.build import build_denoiser
from percept.models.edm import edm_scalings
from percept.training import loop, runtime
from percept.training.crops import center_crops, load_split, random_crops

# Held-out noise levels: the gate's four, then two of the large sigmas the calibration table holds
# for the lowest JPEG rates. New levels go last: the fixed noise of the earlier ones stays the same draw.
VAL_SIGMAS = (0.05, 0.1, 0.2, 0.4, 1.0, 2.0)


@dataclass(frozen=True)
class PriorTrainConfig:
    """One prior training run (see src/percept/configs/prior-*.json)."""

    name: str
    unet: dict = field(default_factory=dict)  # UNetConfig fields
    description: str = ""
    crop: int = 64
    scale_range: tuple[float, float] = (1.0, 2.0)
    batch_size: int = 16
    steps: int = 200000  # default stopping point; a session may stop earlier and resume
    lr: float = 1e-3
    warmup_steps: int = 500
    decay_start: int = 20000  # inverse-sqrt decay of the learning rate after this step
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast where native (CUDA; CPUs with AMX or AVX512-BF16)
    p_mean: float = -1.61
    p_std: float = 1.0
    seed: int = 0
    train_images: int | None = None  # first K files of the train split (None: all)
    val_images: int = 50
    val_crop: int = 128
    log_every: int = 50
    val_every: int = 500
    checkpoint_minutes: float = 5.0

    @classmethod
    def from_dict(cls, d: dict) -> PriorTrainConfig:
        return runtime.config_from_dict(cls, d, "prior")

    def to_dict(self) -> dict:
        return runtime.config_to_dict(self)


class EDMLoss:
    """EDM eq. 8 weighted by lambda = 1/c_out^2: the mean of ((D(x0 + sigma n; sigma) - x0) / c_out)^2,
    with ln sigma ~ N(p_mean, p_std^2); sigma, then the noise, drawn from the loop's generator."""

    def __init__(self, p_mean: float, p_std: float) -> None:
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(self, denoiser: EDMDenoiser, x0: Tensor, generator: torch.Generator) -> Tensor:
        n = x0.shape[0]
        sigma = (self.p_mean + self.p_std * torch.randn(n, generator=generator)).exp().to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return edm_loss(denoiser, x0, sigma, noise)


def edm_loss(denoiser: EDMDenoiser, x0: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """EDM eq. 8 weighted by lambda = 1/c_out^2: the mean of ((D - x0) / c_out)^2."""
    s = sigma.reshape(-1, 1, 1, 1)
    _, c_out, _, _ = edm_scalings(s, denoiser.sigma_data)
    d = denoiser(x0 + s * noise, sigma)
    return (((d - x0) / c_out) ** 2).mean()


@torch.no_grad()
def validate(
    denoiser: EDMDenoiser, clean: Tensor, device: torch.device, batch: int = 16
) -> dict[str, float]:
    """Mean PSNR (dB, peak 2 in [-1,1] = peak 1 in [0,1]) of one-step D(x, sigma) on fixed noise, fp32."""
    g = torch.Generator().manual_seed(1234)
    out = {}
    for sigma in VAL_SIGMAS:
        noise = torch.randn(clean.shape, generator=g)
        psnrs = []
        for i in range(0, len(clean), batch):
            x0 = clean[i : i + batch].to(device)
            x = x0 + sigma * noise[i : i + batch].to(device)
            d = denoiser(x, torch.tensor(sigma, device=device)).float().clamp(-1, 1)
            mse = ((d - x0) ** 2).mean(dim=(1, 2, 3))
            psnrs.append(10 * torch.log10(4 / mse))
        out[f"{sigma:g}"] = round(float(torch.cat(psnrs).mean()), 3)
    return out


class PriorTask(loop.Task):
    """The prior as a `loop.Task`: random crops, `EDMLoss`, the EMA's one-step held-out PSNR."""

    def __init__(self, cfg: PriorTrainConfig, device: torch.device, *, init_from, cooldown, run_dir):
        torch.manual_seed(cfg.seed)
        model = build_denoiser("prior", cfg.unet).to(device)
        schedule = loop.Schedule(
            steps=cfg.steps, seed=cfg.seed, log_every=cfg.log_every, val_every=cfg.val_every,
            grad_clip=cfg.grad_clip, checkpoint_minutes=cfg.checkpoint_minutes, bf16=cfg.bf16,
            ema_decay=cfg.ema_decay,
        )  # fmt: skip
        super().__init__(
            kind="prior", name=f"{cfg.name} ({count_parameters(model) / 1e6:.2f}M)",
            config=cfg.to_dict(), schedule=schedule, model=model,
            optimizer=torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8),
            params=list(model.parameters()), ema=copy.deepcopy(model).requires_grad_(False),
        )  # fmt: skip
        self.cfg, self.device, self.run_dir = cfg, device, run_dir
        self.init_from, self.cooldown = init_from, cooldown
        self.rewarm_from = self.cool_from = None
        self.loss_fn = EDMLoss(cfg.p_mean, cfg.p_std)
        self.images = load_split("train", cfg.train_images, min_side=cfg.crop)
        self.val_clean = center_crops(load_split("val", cfg.val_images, min_side=32), cfg.val_crop) * 2 - 1

    def fresh_start(self, generator):
        if self.init_from is None:
            return 0, 0.0
        step, seconds = _load_published(self.init_from, self.cfg, self.model, self.ema, self.run_dir)
        self.rewarm_from = step
        return step, seconds

    def last_step(self, first_step):
        if self.cooldown is None:
            return None
        self.cool_from = first_step
        return first_step + self.cooldown

    def lr(self, step):
        cfg = self.cfg
        lr = runtime.learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.decay_start)
        if self.rewarm_from is not None:
            lr *= min(1.0, (step - self.rewarm_from + 1) / REWARM_STEPS)
        if self.cooldown is not None:
            lr *= 1.0 - (step - self.cool_from) / self.cooldown
        return lr

    def batch(self, generator):
        cfg, n = self.cfg, self.local_batch(self.cfg.batch_size)
        return random_crops(self.images, n, cfg.crop, generator, cfg.scale_range) * 2 - 1

    def loss(self, batch, generator, step):
        return self.loss_fn(self.forward_model, batch.to(self.device), generator), {}

    def heldout(self):
        return {"val_psnr": validate(self.ema, self.val_clean, self.device)}


def train_prior(
    cfg: PriorTrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
    export: bool = True,
    progress: bool = True,
    init_from: str | Path | None = None,
    cooldown: int | None = None,
) -> dict:
    """Train (or resume) a prior in `run_dir` with `loop.train`; returns a summary dict.

    `init_from` (a zoo name or an exported .safetensors) starts a new run from published weights:
    model and EMA take them, the step count and training time continue from their card, and the
    optimizer starts afresh with a short re-warm-up. That is how a session continues the shipped
    prior when the previous session's full checkpoint (optimizer state) is gone.

    `cooldown` N finishes a session the way warmup-stable-decay schedules do (Hagele et al. 2024):
    the learning rate falls linearly from the schedule's value to zero over the next N steps, and
    the session stops there. The schedule itself has no end, so a later resume continues from the
    schedule's learning rate; the log records the rate of every logged step."""
    if cooldown is not None and cooldown < 1:
        raise PerceptError(f"cooldown must be a positive number of steps, got {cooldown}")
    run = loop.Run(run_dir, resume=resume, device=device)
    task = PriorTask(
        cfg, run.device, init_from=None if resume else init_from, cooldown=cooldown, run_dir=run.dir
    )
    result = loop.train(task, run, max_minutes=max_minutes, max_steps=max_steps, progress=progress)
    if export and run.world.main:
        export_model(run.dir, run.dir / "ema.safetensors")
    return {
        "step": result.step,
        "train_seconds": result.train_seconds,
        "params": count_parameters(task.model),
        "val_psnr": (result.heldout or {}).get("val_psnr"),
    }


REWARM_STEPS = 100


def _load_published(
    source: str | Path, cfg: PriorTrainConfig, model, ema, run_dir: Path
) -> tuple[int, float]:
    """Load exported EMA weights into `model` and `ema`; returns (steps, train_seconds) of their card.
    Their card is kept as `inherited_card.json` in the run, so the published card's history and
    commands start at step 0 (`percept.training.publish.publish_run` merges it)."""
    state, card = load_weights_and_card(source)
    if card.get("unet") != cfg.unet:
        raise PerceptError(
            f"{source} holds a network of another shape than config {cfg.name!r}: use its own config"
        )
    model.net.load_state_dict(state)
    ema.net.load_state_dict(state)
    runtime.write_inherited_card(run_dir, source, card)
    return int(card.get("steps", 0)), float(card.get("train_seconds", 0.0))


def export_model(run_dir: Path | str, out_path: Path | str) -> Path:
    """Write the EMA weights of a run's latest checkpoint as safetensors + JSON sidecar; returns the path."""
    run_dir = Path(run_dir)
    ck = runs.read_checkpoint(run_dir)
    cfg = ck["config"]
    card = {
        "kind": "prior",
        "arch": "unet-edm",
        "unet": cfg["unet"],
        "sigma_data": 0.5,
        "steps": int(ck["step"]),
        "train_seconds": round(float(ck["train_seconds"]), 1),
        "data": f"imagenet-sample train split, {cfg['crop']}x{cfg['crop']} crops, scale {cfg['scale_range']}",
        "training_config": cfg,
        "val_psnr": (runtime.latest_val(run_dir) or {}).get("val_psnr"),
        **runtime.lineage(run_dir, cfg["batch_size"], int(ck["step"])),
        "environment": environment(),
    }
    state = {k.removeprefix("net."): v for k, v in ck["ema"].items()}
    card["params"] = sum(v.numel() for v in state.values() if v.is_floating_point())
    return save_weights(state, card, Path(out_path))
