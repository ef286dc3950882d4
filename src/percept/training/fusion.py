"""Train paper 2's two stages: `percept train aux-encoder` (b) and `percept train fusion` (c).

Both train against a frozen project codec (percept-hyperprior at one quality) on random crops of the
imagenet-sample train split (`percept.training.crops`, never Kodak) and measure held-out figures on
center crops of the val split as they go. A run directory holds config.json, checkpoint.pt
(weights_only-safe; models, optimizers, generator and RNG states, step), log.jsonl and, at the end of
the schedule (or with --export), the exported weights: `aux-encoder.safetensors` (stage b) or
`fusion.safetensors` (stage c, the EMA network: what `percept publish` ships).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from percept.codecs.project import load_trained_codec, project_codec_path
from percept.core.provenance import environment
from percept.errors import PerceptError
from percept.fusion.aux_encoder import (
    PatchDiscriminator,
    aux_decode,
    aux_images,
    discriminator_loss,
    freeze,
    generator_loss,
    latent_bpp,
    make_aux_encoder,
    patch_swd_loss,
    psnr,
)  # fmt: skip
from percept.fusion.latents import from_image, synthesize
from percept.fusion.module import FusionSampling, LatentFusion, read_fusion, save_fusion
from percept.fusion.network import EDMLoss, LatentDenoiser, LatentFusionNet
from percept.hub import runs, zoo
from percept.training import loop, runtime
from percept.training.crops import center_crops, load_split, random_crops

AUX_FILE, FUSION_FILE = "aux-encoder.safetensors", "fusion.safetensors"


@dataclass(frozen=True)
class AuxConfig:
    """Stage (b): loss = lmbda 255^2 MSE + rate_weight bpp + adv_weight GAN + swd_weight patch SWD."""

    name: str
    codec: str = "percept-hyperprior"
    quality: int = 2
    crop: int = 128
    batch_size: int = 8
    steps: int = 2000
    lr: float = 1e-4
    disc_lr: float = 1e-4
    rate_weight: float = 1.0
    adv_weight: float = 0.1
    swd_weight: float = 0.05
    disc_width: int = 64
    adv_start: int = 100  # discriminator-only steps before the adversarial term joins
    seed: int = 0
    train_images: int | None = None
    val_images: int = 12
    val_crop: int = 256
    log_every: int = 10
    val_every: int = 250
    checkpoint_every: int = 50
    description: str = ""


@dataclass(frozen=True)
class FusionConfig:
    """Stage (c): EDM denoising loss on the normalised residual Q(g'_a(x)) - y_hat."""

    name: str
    aux_run: str  # the stage-(b) run directory (or its exported aux-encoder.safetensors)
    codec: str = "percept-hyperprior"
    quality: int = 2
    crop: int = 256
    batch_size: int = 8
    steps: int = 4000
    lr: float = 2e-4
    warmup_steps: int = 100
    ema: float = 0.999
    width: int = 128
    blocks: int = 6
    emb: int = 128
    p_mean: float = -0.4
    p_std: float = 1.2
    target: str = "shift"  # or "continuous" / "quantized" (residual_pairs)
    design: str = "blend"
    sample_steps: int = 4
    sigma_max: float = 10.0
    eta: float = 0.0
    stats_batches: int = 8  # batches that measure the per-channel residual and condition scales
    seed: int = 0
    train_images: int | None = None
    val_images: int = 12
    val_crop: int = 256
    log_every: int = 10
    val_every: int = 500
    checkpoint_every: int = 100
    description: str = ""

    def sampling(self) -> FusionSampling:
        return FusionSampling(self.design, self.sample_steps, self.sigma_max, eta=self.eta)


def load_config(spec, cls, overrides: dict | None = None):
    """A config of class `cls` from a packaged name, a JSON path or a dict, with overrides."""
    prefix = "aux-" if cls is AuxConfig else "fusion-"
    data = dict(spec) if isinstance(spec, dict) else runtime.read_config(str(spec), prefix)
    data.update(overrides or {})
    return runtime.cropped_config(cls, data, "aux-encoder" if cls is AuxConfig else "fusion")


def base_codec(name: str, quality: int) -> tuple[torch.nn.Module, dict]:
    """The frozen project codec and its training record (lambda)."""
    model, record = load_trained_codec(project_codec_path(name, quality))
    return freeze(model), record


def _measure(rows: dict, images: dict, x: torch.Tensor, seed: int) -> None:
    """Add PSNR and patch SWD (x1e3) of each decode in `images` of the batch x to `rows` (sums
    weighted by batch size; every decode of a batch is scored on the same patches)."""
    for key, img in images.items():
        g = torch.Generator().manual_seed(seed)
        rows[f"psnr_{key}"] = rows.get(f"psnr_{key}", 0.0) + psnr(img, x) * len(x)
        swd = 1e3 * patch_swd_loss(img, x, patches=1024, generator=g).item()
        rows[f"swd_{key}"] = rows.get(f"swd_{key}", 0.0) + swd * len(x)


@torch.no_grad()
def aux_heldout(model, aux, val: torch.Tensor) -> dict:
    """Held-out PSNR and patch SWD (x1e3) of the base and auxiliary decodes, and the aux rate."""
    rows: dict[str, float] = {"bpp_aux": 0.0}
    for i in range(0, len(val), 4):
        x = val[i : i + 4]
        base, aux_x = aux_images(model, aux, x)
        out = aux_decode(model, aux, x)
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        rows["bpp_aux"] += latent_bpp(model, out["y_aux_hat"], out["latents"], pixels).item() * len(
            x
        )
        _measure(rows, {"base": base, "aux": aux_x}, x, i)
    return {k: round(v / len(val), 4) for k, v in rows.items()}


def _setup(cfg, device: str):
    """The frozen codec (and its training record), the training photos and the held-out crops."""
    model, record = base_codec(cfg.codec, cfg.quality)
    train = load_split("train", cfg.train_images, min_side=cfg.crop)
    val = center_crops(load_split("val", cfg.val_images, min_side=cfg.val_crop), cfg.val_crop)
    return model.to(device), record, train, val.to(device)


class AuxLoss:
    """Stage (b)'s generator loss: lmbda 255^2 MSE + rate_weight bpp + swd_weight patch SWD, plus
    adv_weight times the adversarial term once `adv_start` steps have trained the discriminator."""

    def __init__(self, cfg: AuxConfig, codec, disc, mse_weight: float) -> None:
        self.cfg, self.codec, self.disc, self.mse_weight = cfg, codec, disc, mse_weight

    def __call__(self, aux, x: torch.Tensor, generator: torch.Generator, step: int):
        cfg, o = self.cfg, aux_decode(self.codec, aux, x)
        y_base = o["latents"].y_hat
        mse = torch.mean((o["x_aux"] - x) ** 2)
        bpp = latent_bpp(self.codec, o["y_aux_hat"], o["latents"], x.shape[0] * x.shape[2] * x.shape[3])
        swd = patch_swd_loss(o["x_aux"], x, generator=generator)
        loss = self.mse_weight * mse + cfg.rate_weight * bpp + cfg.swd_weight * swd
        adv = torch.zeros(())
        if step >= cfg.adv_start and cfg.adv_weight:
            adv = generator_loss(self.disc(o["x_aux"], y_base))
            loss = loss + cfg.adv_weight * adv
        return loss, {"mse": mse, "bpp": bpp, "swd": swd, "adv": adv}, o


def _schedule(cfg) -> loop.Schedule:
    return loop.Schedule(
        steps=cfg.steps, seed=cfg.seed, log_every=cfg.log_every, val_every=cfg.val_every,
        grad_clip=1.0, checkpoint_every=cfg.checkpoint_every,
    )  # fmt: skip


class AuxTask(loop.Task):
    """Stage (b) as a `loop.Task`: `AuxLoss` for g'_a, then one discriminator step."""

    def __init__(self, cfg: AuxConfig, device: str) -> None:
        self.codec, record, self.train, self.val = _setup(cfg, device)
        torch.manual_seed(cfg.seed)
        aux = make_aux_encoder(self.codec).to(device).train()
        disc = PatchDiscriminator(self.codec.g_s[0].in_channels, cfg.disc_width).to(device).train()
        super().__init__(
            kind="aux-encoder", name=cfg.name, config=dataclasses.asdict(cfg),
            schedule=_schedule(cfg), model=aux, params=list(aux.parameters()),
            optimizer=torch.optim.Adam(aux.parameters(), lr=cfg.lr), modules={"disc": disc},
            optimizers={"disc": torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999))},
            growable=("steps",), val_at_start=True,
        )  # fmt: skip
        self.cfg, self.device = cfg, device
        self.loss_fn = AuxLoss(cfg, self.codec, disc, record["lmbda"] * 255**2)

    def batch(self, generator):
        n = self.local_batch(self.cfg.batch_size)
        return random_crops(self.train, n, self.cfg.crop, generator).to(self.device)

    def loss(self, batch, generator, step):
        loss, terms, self._decoded = self.loss_fn(self.forward_model, batch, generator, step)
        return loss, terms

    def after_step(self, batch, generator, step):
        disc, o = self.modules["disc"], self._decoded
        y_base = o["latents"].y_hat
        d_loss = discriminator_loss(disc(batch, y_base), disc(o["x_aux"].detach(), y_base))
        self.optimizers["disc"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["disc"].step()
        self._decoded = None
        return {"disc": d_loss}

    def heldout(self):
        return aux_heldout(self.codec, self.model, self.val)


def train_aux(cfg: AuxConfig, out_dir, *, resume=False, max_minutes=None, max_steps=None,
              device="cpu", export=False, progress=True) -> dict:  # fmt: skip
    """Stage (b): train g'_a against the frozen codec (module docstring) with `loop.train`."""
    run = loop.Run(out_dir, resume=resume, device=device)
    task = AuxTask(cfg, device)
    result = loop.train(task, run, max_minutes=max_minutes, max_steps=max_steps, progress=progress)
    if (result.step >= cfg.steps or export) and run.world.main:
        meta = {"percept-aux": json.dumps({**dataclasses.asdict(cfg), "steps_trained": result.step})}
        state = {k: v.cpu().contiguous() for k, v in task.model.state_dict().items()}
        save_file(state, str(run.dir / AUX_FILE), metadata=meta)
    return {"run_dir": str(run.dir), "step": result.step, "stopped_by": result.stopped_by}


def load_aux_encoder(source: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """The trained g'_a of a stage-(b) run directory (its checkpoint) or its exported file."""
    path = Path(source)
    if path.is_dir():
        if (path / runtime.CHECKPOINT).exists():
            state = runs.read_checkpoint(path)["model"]
        elif (path / AUX_FILE).is_file():
            path = path / AUX_FILE
        else:
            raise PerceptError(f"aux_run {source}: neither a checkpoint nor {AUX_FILE} there")
    if path.is_file():
        state = load_file(str(path))
    elif not path.is_dir():
        raise PerceptError(f"aux_run {source}: no such run directory or file")
    aux = make_aux_encoder(model)
    aux.load_state_dict(state)
    return freeze(aux)


TARGETS = ("shift", "continuous", "quantized")


@torch.no_grad()
def residual_pairs(
    model, aux, x: torch.Tensor, target: str = "shift"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(condition, residual in latent units) for images x: the stage-(c) training pairs.

    What the fused latents y_hat + r aim at:
    - "shift" (shipped): y_hat + (g'_a(x) - g_a(x)), the decoded latents moved as the auxiliary
      encoder moves the codec's latents. It keeps nearly all of the auxiliary decode's realism and
      none of the rounding noise of y, which nothing the decoder holds predicts.
    - "continuous": g'_a(x) before rounding (that noise included: it mostly buys PSNR, not realism).
    - "quantized": the paper's Q(g'_a(x)), mostly zeros and +-1 flips of the rounding.
    The book's chapter measures all three (the decodes of the true targets, then trained modules)."""
    if target not in TARGETS:
        raise PerceptError(f"fusion target must be one of {', '.join(TARGETS)}, got {target!r}")
    y, latents = from_image(model, x)
    y_aux = aux(x)
    if target == "shift":
        return latents.condition(), y_aux - y
    if target == "quantized":
        y_aux = torch.round(y_aux - latents.means) + latents.means
    return latents.condition(), y_aux - latents.y_hat


@torch.no_grad()
def fusion_heldout(fusion: LatentFusion, aux, val: torch.Tensor, taus=(0.5, 1.0)) -> dict:
    """Held-out PSNR and patch SWD (x1e3) of the base, auxiliary and fused decodes."""
    model, rows = fusion.codec_model, {}
    for i in range(0, len(val), 4):
        x = val[i : i + 4]
        _, latents = from_image(model, x)
        images = {"base": synthesize(model, latents.y_hat), "aux": aux_images(model, aux, x)[1]}
        for tau in taus:
            gen = torch.Generator().manual_seed(i)
            images[f"tau{tau:g}"] = fusion.decode_latents(latents, tau, gen)
        _measure(rows, images, x, i)
    return {k: round(v / len(val), 4) for k, v in rows.items()}


class FusionTask(loop.Task):
    """Stage (c) as a `loop.Task`: residual pairs of random crops, the latent `EDMLoss`, an EMA
    (warm-up ramp: a short CPU schedule would otherwise keep a large share of the zero-output
    initial network and shrink every sampled residual); held-out decodes of the EMA."""

    def __init__(self, cfg: FusionConfig, device: str) -> None:
        self.codec, _, self.train, self.val = _setup(cfg, device)
        self.aux = load_aux_encoder(cfg.aux_run, self.codec).to(device)
        torch.manual_seed(cfg.seed)
        channels = self.codec.g_s[0].in_channels
        net = LatentFusionNet(channels, cfg.width, cfg.blocks, cfg.emb)
        denoiser = LatentDenoiser(net).to(device).train()
        super().__init__(
            kind="fusion", name=cfg.name, config=dataclasses.asdict(cfg),
            schedule=dataclasses.replace(_schedule(cfg), ema_decay=cfg.ema), model=denoiser,
            optimizer=torch.optim.Adam(denoiser.parameters(), lr=cfg.lr),
            params=list(denoiser.parameters()),
            ema=copy.deepcopy(denoiser).eval().requires_grad_(False), growable=("steps",),
        )  # fmt: skip
        self.cfg, self.device = cfg, device
        self.loss_fn = EDMLoss(cfg.p_mean, cfg.p_std)

    def fresh_start(self, generator):
        """The normalising scales, from a few training batches (then fixed, stored as buffers)."""
        cfg, denoiser = self.cfg, self.model
        conds, res = zip(*(
            residual_pairs(self.codec, self.aux, self.batch(generator), cfg.target)
            for _ in range(cfg.stats_batches)
        ))  # fmt: skip
        r_std = torch.cat(res).std(dim=(0, 2, 3))
        denoiser.residual_std.copy_(r_std.clamp_min(0.1 * r_std.mean()))
        denoiser.condition_std.copy_(torch.cat(conds).std(dim=(0, 2, 3)).clamp_min(1e-2))
        self.ema.load_state_dict(denoiser.state_dict())
        return 0, 0.0

    def lr(self, step):
        return self.cfg.lr * min(1.0, (step + 1) / max(self.cfg.warmup_steps, 1))

    def batch(self, generator):
        n = self.local_batch(self.cfg.batch_size)
        return random_crops(self.train, n, self.cfg.crop, generator).to(self.device)

    def loss(self, batch, generator, step):
        cond, r = residual_pairs(self.codec, self.aux, batch, self.cfg.target)
        return self.loss_fn(self.forward_model, self.model.from_latent(r), cond, generator), {}

    def heldout(self):
        cfg = self.cfg
        fusion = LatentFusion(self.codec, self.ema, codec_name=cfg.codec, quality=cfg.quality,
                              sampling=cfg.sampling())  # fmt: skip
        return fusion_heldout(fusion, self.aux, self.val)


def train_fusion(cfg: FusionConfig, out_dir, *, resume=False, max_minutes=None, max_steps=None,
                 device="cpu", export=False, progress=True) -> dict:  # fmt: skip
    """Stage (c): train the latent denoiser on residuals toward the auxiliary latents."""
    run = loop.Run(out_dir, resume=resume, device=device)
    task = FusionTask(cfg, device)
    result = loop.train(task, run, max_minutes=max_minutes, max_steps=max_steps, progress=progress)
    if (result.step >= cfg.steps or export) and run.world.main:
        export_fusion(task.ema, cfg, result.step, run.dir / FUSION_FILE)
    return {"run_dir": str(run.dir), "step": result.step, "stopped_by": result.stopped_by}


def export_fusion(denoiser: LatentDenoiser, cfg: FusionConfig, step: int, path: Path) -> Path:
    """The EMA denoiser with the card a loader needs (codec, rate, network, sampling) as metadata."""
    card = {"codec": cfg.codec, "quality": cfg.quality, "net": denoiser.net.config,
            "sampling": dataclasses.asdict(cfg.sampling()), "config": dataclasses.asdict(cfg),
            "steps_trained": step, "environment": environment()}  # fmt: skip
    return save_fusion(denoiser, card, path)


def publish_fusion(run_dir, name: str | None = None, *, folder=None, half: bool = True) -> dict:
    """Ship a finished `percept train fusion` run into the zoo: float16 network weights (float32
    normalising scales), sha256, and a card with the codec, rate, sampling, training cost and the
    held-out curves of both stages."""
    run_dir = Path(run_dir)
    state, record = read_fusion(run_dir)
    cfg = record["config"]
    name = name or cfg["name"]
    rows = runs.read_log(run_dir)
    aux_dir = Path(cfg["aux_run"])
    aux_rows = runs.read_log(aux_dir) if aux_dir.is_dir() else []
    denoiser = LatentDenoiser(LatentFusionNet(**record["net"]))
    denoiser.load_state_dict(state)
    card = {
        "environment": environment(),  # a run exported before cards carried it: this machine's
        **record, "arch": "latent-fusion", "name": name,
        "params": sum(p.numel() for p in denoiser.net.parameters()),
        "steps": record["steps_trained"], "storage_dtype": "float16" if half else "float32",
        "train_seconds": round(runtime.wall_seconds(rows) + runtime.wall_seconds(aux_rows), 1),
        "data": "imagenet-sample train split (every 10th file held out); never Kodak",
        "aux_encoder": {"run": str(aux_dir), "config": _run_config(aux_dir),
                        "heldout": [r for r in aux_rows if r.get("kind") == "val"]},
        "history": {"val": [r for r in rows if r.get("kind") == "val"],
                    "loss": zoo.thin([r for r in rows if "loss" in r])},
        "source_run": str(run_dir),
    }  # fmt: skip
    folder = Path(folder) if folder is not None else zoo.weights_dir()
    with tempfile.TemporaryDirectory() as tmp:
        exported = save_fusion(denoiser, card, Path(tmp) / "f.safetensors", half=half)
        tensors = load_file(str(exported))
    return zoo.publish(name, "fusion", tensors, card, folder=folder)


def _run_config(run_dir: Path) -> dict | None:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None
