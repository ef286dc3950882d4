"""Train the project's learned codec: `percept train codec --config codec-hyperprior-q3 --out runs/q3`.

A CompressAI mean-scale hyperprior is trained for MSE at one rate per run. The objective is the
rate-distortion Lagrangian in CompressAI's convention, L = lambda * 255^2 * MSE + bpp, where bpp is
the negative log2-likelihood of the noisy latents y and z per pixel (Balle et al. 2018, eq. 2 with
additive uniform noise standing in for rounding). The entropy bottleneck's quantiles are fitted by a
separate "aux" loss with its own optimizer, as CompressAI's examples/train.py does.

Data: random crops (with horizontal flips) of the imagenet-sample TRAIN split, decoded once into
memory as uint8 (`percept.training.crops.load_split`: the photos, or the packed crops named by
PERCEPT_CROPS, so a codec trains on a machine without the photos as the prior does); held-out PSNR
and bpp are measured on center crops of the VAL split with real bitstreams (`model.update()` then
`compress`), never on Kodak. The run directory holds
`checkpoint.pt` (weights_only-safe; model, both optimizers, step, RNG states), `log.jsonl` and, when
the schedule ends (or with --export), `<config name>.safetensors`, checked to decode bit-exactly
after reloading.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from percept.codecs.project import (
    build_model,
    exported_codec_path,
    load_trained_codec,
    roundtrip_is_exact,
    save_trained_codec,
)
from percept.core.provenance import environment
from percept.errors import PerceptError
from percept.hub import runs
from percept.training import loop, runtime
from percept.training.crops import center_crops, load_split, random_crops


@dataclass(frozen=True)
class CodecTrainConfig:
    """One training run at one rate (see src/percept/configs/codec-*.json)."""

    name: str
    architecture: str
    N: int
    M: int
    quality: int
    lmbda: float
    crop: int = 128
    batch_size: int = 8
    steps: int = 50000  # length of the schedule; a session may stop earlier and resume
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_decay_at: float = 0.85  # fraction of `steps` after which lr is multiplied by lr_decay_factor
    lr_decay_factor: float = 0.1
    aux_lr: float = 1e-3
    clip_max_norm: float = 1.0
    seed: int = 0
    train_images: int | None = None  # first K files of the train split (None: all of them)
    val_images: int = 24
    val_crop: int = 256
    log_every: int = 10
    val_every: int = 1000
    checkpoint_every: int = 250
    # start from another run's weights (a run directory or an exported codec file)
    init_from: str | None = None
    description: str = ""


def packaged_configs() -> list[str]:
    """Names of the codec training configs shipped with the package."""
    folder = resources.files("percept") / "configs"
    return sorted(
        p.name[:-5]
        for p in folder.iterdir()
        if p.name.startswith("codec-") and p.name.endswith(".json")
    )


def load_config(
    spec: CodecTrainConfig | dict | str | os.PathLike, overrides: dict | None = None
) -> CodecTrainConfig:
    """A config from a packaged name, a JSON path, a dict or a config, with optional overrides."""
    if isinstance(spec, CodecTrainConfig):
        data = dataclasses.asdict(spec)
    elif isinstance(spec, dict):
        data = dict(spec)
    elif Path(spec).is_file():
        data = json.loads(Path(spec).read_text())
    elif str(spec) in packaged_configs():
        data = json.loads((resources.files("percept") / "configs" / f"{spec}.json").read_text())
    else:
        raise PerceptError(
            f"no codec config {spec!r}: give a JSON file or one of {', '.join(packaged_configs())}"
        )
    data.update(overrides or {})
    return runtime.cropped_config(CodecTrainConfig, data, "codec")


def lr_at(cfg: CodecTrainConfig, step: int) -> float:
    """Linear warm-up, then constant, then one step decay near the end of the schedule."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
    return lr * cfg.lr_decay_factor if step >= cfg.lr_decay_at * cfg.steps else lr


def rd_loss(out: dict, x: torch.Tensor, lmbda: float) -> dict[str, torch.Tensor]:
    """lambda * 255^2 * MSE + bpp, with bpp = sum of -log2 likelihoods per pixel of the batch."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(lik).sum() for lik in out["likelihoods"].values()) / (
        -math.log(2) * num_pixels
    )
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return {"loss": lmbda * 255**2 * mse + bpp, "mse": mse, "bpp": bpp}


@torch.no_grad()
def heldout_rd(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (8-bit rounded reconstructions) and bpp from real compress() bytes per image."""
    was_training = model.training
    model.update(force=True)
    model.eval()
    device = next(model.parameters()).device
    psnrs, bpps = [], []
    for x in images:
        x = x[None].to(device)
        enc = model.compress(x)
        nbytes = sum(len(s) for group in enc["strings"] for s in group)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"].mul(255).round().div(255)
        psnrs.append(-10 * math.log10(max(torch.mean((x_hat - x) ** 2).item(), 1e-12)))
        bpps.append(8 * nbytes / (x.shape[2] * x.shape[3]))
    model.train(was_training)
    return {"psnr": sum(psnrs) / len(psnrs), "bpp": sum(bpps) / len(bpps)}


def export_codec(model: torch.nn.Module, config: dict, path: Path, probe: torch.Tensor) -> Path:
    """Write the codec file and check that the reloaded model decodes bit-exactly on `probe`."""
    model.update(force=True)
    model.eval()
    save_trained_codec(model, config, path)
    reloaded, _ = load_trained_codec(path)
    probe = probe[None] if probe.dim() == 3 else probe
    if not roundtrip_is_exact(model.cpu(), reloaded, probe.cpu()):
        raise PerceptError(f"exported codec {path} does not decode bit-exactly after reloading")
    return path


def _initial_weights(source: str, cfg: CodecTrainConfig) -> dict[str, torch.Tensor]:
    """Weights to fine-tune from: a run directory (its checkpoint) or an exported codec file. The
    usual way to get several rates cheaply: train one rate, then fine-tune the others from it."""
    path = Path(source)
    if path.is_dir() and not (path / "checkpoint.pt").exists():
        # a run carried back without its checkpoint (optimizer state is large): its export
        exported = exported_codec_path(path)
        if exported is None or not exported.is_file():
            raise PerceptError(
                f"init_from {source}: that run directory has neither checkpoint.pt nor an exported codec"
            )
        path = exported
    if path.is_dir():
        state = runs.read_checkpoint(path)
        arch, n, m, weights = (
            state["config"]["architecture"],
            state["config"]["N"],
            state["config"]["M"],
            state["model"],
        )
    elif path.is_file():
        model, record = load_trained_codec(path)
        arch, n, m, weights = record["architecture"], record["N"], record["M"], model.state_dict()
    else:
        raise PerceptError(f"init_from {source}: no such run directory or codec file")
    if (arch, n, m) != (cfg.architecture, cfg.N, cfg.M):
        raise PerceptError(
            f"init_from {source} holds {arch} N={n} M={m}; config {cfg.name!r} needs "
            f"{cfg.architecture} N={cfg.N} M={cfg.M}"
        )
    return weights  # the entropy coders' tables are rebuilt when the fine-tuned codec is exported


def _data_fingerprint(images: list[torch.Tensor]) -> str:
    """Hash of the training pixels themselves (photos or packed crops alike), for --resume."""
    return runtime.tensor_digest((tuple(img.shape), img) for img in images)


class RateDistortionLoss:
    """`rd_loss` of the codec's forward pass: lambda * 255^2 * MSE + bpp; logs mse and bpp too."""

    def __init__(self, lmbda: float) -> None:
        self.lmbda = lmbda

    def __call__(self, model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        losses = rd_loss(model(x), x, self.lmbda)
        return losses["loss"], {"mse": losses["mse"], "bpp": losses["bpp"]}


class CodecTask(loop.Task):
    """The codec as a `loop.Task`: random crops, `RateDistortionLoss`, then the entropy
    bottleneck's aux loss with its own optimizer; held-out PSNR and bpp from real bitstreams."""

    def __init__(self, cfg: CodecTrainConfig, device: str, train_images, val_set) -> None:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.architecture, cfg.N, cfg.M).to(device).train()
        net_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
        aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
        schedule = loop.Schedule(
            steps=cfg.steps, seed=cfg.seed, log_every=cfg.log_every, val_every=cfg.val_every,
            grad_clip=cfg.clip_max_norm, checkpoint_every=cfg.checkpoint_every,
        )  # fmt: skip
        super().__init__(
            kind="codec", name=cfg.name, config=dataclasses.asdict(cfg), schedule=schedule,
            model=model, optimizer=torch.optim.Adam(net_params, lr=cfg.lr), params=net_params,
            optimizers={"aux": torch.optim.Adam(aux_params, lr=cfg.aux_lr)},
        )  # fmt: skip
        self.cfg, self.device, self.images, self.val_set = cfg, device, train_images, val_set
        self.fingerprint = _data_fingerprint(train_images)
        self.loss_fn = RateDistortionLoss(cfg.lmbda)

    def restore(self, checkpoint):
        if checkpoint["extra"]["data"] != self.fingerprint:
            raise PerceptError(
                "--resume with different training images than the run started with (another"
                " PERCEPT_DATA, a PERCEPT_CROPS pack instead of the photos, or another limit)"
            )

    def fresh_start(self, generator):
        if self.cfg.init_from:
            self.model.load_state_dict(_initial_weights(self.cfg.init_from, self.cfg))
        return 0, 0.0

    def extra(self):
        return {"data": self.fingerprint}

    def lr(self, step):
        return lr_at(self.cfg, step)

    def batch(self, generator):
        cfg, n = self.cfg, self.local_batch(self.cfg.batch_size)
        return random_crops(self.images, n, cfg.crop, generator).to(self.device)

    def loss(self, batch, generator, step):
        self.optimizers["aux"].zero_grad(set_to_none=True)
        return self.loss_fn(self.forward_model, batch)

    def after_step(self, batch, generator, step):
        aux = self.model.aux_loss()
        aux.backward()
        self.optimizers["aux"].step()
        return {"aux": aux}

    def heldout(self):
        return heldout_rd(self.model, self.val_set)


def train_codec(
    config: CodecTrainConfig | dict | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    max_minutes: float | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    export: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or continue) one codec run with `loop.train`; returns a summary dict.

    `max_steps` stops this session at that global step (the lr schedule still spans `config.steps`);
    `max_minutes` stops after that wall time; SIGTERM stops after the current step. Every stop
    writes a checkpoint, so `resume=True` continues exactly where it stopped. The codec file is
    exported when the schedule completes, or at any stop when `export=True`.
    """
    cfg = load_config(config)
    if threads:
        torch.set_num_threads(threads)
    run = loop.Run(out_dir, resume=resume, device=device)
    train_images = load_split("train", cfg.train_images, min_side=cfg.crop)
    val_images = load_split("val", cfg.val_images, min_side=cfg.val_crop)
    if not train_images or not val_images:
        raise PerceptError(
            f"no imagenet-sample image is at least {cfg.crop} px (train) / {cfg.val_crop} px (val)"
        )
    val_set = center_crops(val_images, cfg.val_crop)
    task = CodecTask(cfg, device, train_images, val_set)
    result = loop.train(task, run, max_minutes=max_minutes, max_steps=max_steps, progress=progress)
    step, last_val, out = result.step, result.heldout, run.dir
    exported = None
    if (step >= cfg.steps or export) and run.world.main:
        if last_val is None or last_val["step"] != step:
            last_val = {"step": step, **heldout_rd(task.model, val_set)}
        record = {
            **dataclasses.asdict(cfg), "steps_trained": step, "heldout": last_val,
            "train_data": f"imagenet-sample train split ({len(train_images)} images; every 10th file held out)",
            "environment": environment(),
        }  # fmt: skip
        exported = export_codec(task.model, record, out / f"{cfg.name}.safetensors", val_set[0])
    seconds = result.session_seconds
    session_steps = step - result.first_step
    summary = {
        "run_dir": str(out), "config": cfg.name, "step": step, "steps": cfg.steps, "last_val": last_val,
        "session_steps": session_steps, "session_seconds": round(seconds, 1),
        "it_per_s": round(session_steps / seconds, 3) if seconds > 0 else None,
        "stopped_by": result.stopped_by,
    }  # fmt: skip
    if exported is not None:
        summary["export"] = str(exported)
    return summary
