"""LatentFusion: the decoder-side module of paper 2, bound to one frozen codec at one rate.

How tau steers it (the paper gives only that tau "controls the diffusion process and the fusion of
original and transformed latents"; these are our designs, measured against each other in the book):

- "blend": sample the residual with the full few-step schedule, then y = y_hat + tau * r.
  Freirich et al. (2021) show that mixing the MMSE estimate with a perfect-perception sample
  traverses the MSE-perception trade-off; the blend does that in latent space.
- "start": tau sets where the sampler starts (DIRAC's "late start"): the residual starts at zero
  plus noise of level tau * sigma_max, and runs the tail of the schedule; y = y_hat + r.
- "both": the late start, then the blend with tau.

tau = 0 never runs the network: it returns the base codec's latents (and images) unchanged, by
construction. Sampling is DDIM-like in few steps: eta = 0 is DDIM (the Euler step of the PF-ODE),
eta = 1 its ancestral counterpart; noise comes from per-image generators (`percept.core.samplers`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from percept.codecs.project import load_project_model
from percept.core.samplers import (
    Generators,
    per_image_generators,
    randn_like,
    sample_euler,
    sample_euler_ancestral,
)
from percept.core.schedules import karras_sigmas
from percept.errors import PerceptError, WeightsUnavailable
from percept.fusion.latents import DecodedLatents, check_hyperprior, from_image, synthesize
from percept.fusion.network import LatentDenoiser, LatentFusionNet
from percept.hub import zoo

DESIGNS = ("blend", "start", "both")


@dataclass(frozen=True)
class FusionSampling:
    """How the residual is sampled at decode time (data, stored in the module's card)."""

    design: str = "blend"
    steps: int = 4
    sigma_max: float = 10.0
    sigma_min: float = 0.02
    eta: float = 0.0  # 0: DDIM (deterministic given the start); 1: ancestral

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise PerceptError(f"unknown fusion design {self.design!r}: choose from {DESIGNS}")
        if self.eta not in (0.0, 1.0):
            raise PerceptError(f"eta must be 0 (DDIM) or 1 (ancestral), got {self.eta}")
        if self.steps < 1:
            raise PerceptError(f"fusion needs at least one sampling step, got {self.steps}")


def check_tau(tau: float) -> float:
    """tau as a float in [0, 1], or one line saying what is wrong."""
    try:
        value = float(tau)
    except (TypeError, ValueError):
        raise PerceptError(f"tau must be a number in [0, 1], got {tau!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise PerceptError(f"tau must be in [0, 1], got {tau!r}")
    return value


class LatentFusion(nn.Module):
    """A frozen hyperprior codec plus a latent fusion denoiser, steered by tau.

    `codec_name`/`quality` say which codec the module was trained for, so that a file of another
    codec or rate is refused instead of decoded into nonsense.
    """

    def __init__(
        self, codec_model: nn.Module, denoiser: LatentDenoiser, *, codec_name: str, quality: int,
        sampling: FusionSampling = FusionSampling(),
    ):  # fmt: skip
        super().__init__()
        check_hyperprior(codec_model)
        self.codec_model = codec_model.eval()
        self.denoiser = denoiser.eval()
        self.codec_name, self.quality, self.sampling = codec_name, quality, sampling

    def _sigmas(self, tau: float) -> Tensor:
        s = self.sampling
        start = s.sigma_max * tau if s.design in ("start", "both") else s.sigma_max
        if start <= s.sigma_min:
            return torch.tensor([start, 0.0], dtype=torch.float64)
        return karras_sigmas(s.steps, start, s.sigma_min)

    @torch.no_grad()
    def residual(self, latents: DecodedLatents, tau: float, generator: Generators = None) -> Tensor:
        """A sample of the residual toward the auxiliary latents (latent units), for this tau."""
        y_hat = latents.y_hat
        gens = per_image_generators(generator, y_hat.shape[0])
        sigmas = self._sigmas(tau)
        x = randn_like(y_hat, gens) * float(
            sigmas[0]
        )  # the residual starts at 0 (the base latents)
        sample = sample_euler_ancestral if self.sampling.eta else sample_euler
        r = sample(self.denoiser.bind(latents.condition()), x, sigmas, generator=gens)
        return self.denoiser.to_latent(r)

    @torch.no_grad()
    def fuse(self, latents: DecodedLatents, tau: float, generator: Generators = None) -> Tensor:
        """The fused latents for tau: y_hat itself at tau = 0 (the same tensor, no network run)."""
        tau = check_tau(tau)
        if tau == 0.0:
            return latents.y_hat
        r = self.residual(latents, tau, generator)
        weight = 1.0 if self.sampling.design == "start" else tau
        return latents.y_hat + weight * r

    @torch.no_grad()
    def decode_latents(
        self, latents: DecodedLatents, tau: float, generator: Generators = None
    ) -> Tensor:
        """Images in [0,1] (unrounded, padded size) from decoded latents at this tau."""
        return synthesize(self.codec_model, self.fuse(latents, tau, generator))

    @torch.no_grad()
    def forward(self, x: Tensor, tau: float, generator: Generators = None) -> Tensor:
        """Encode-free evaluation path: latents from images x (sides multiples of 64), then decode."""
        _, latents = from_image(self.codec_model, x)
        return self.decode_latents(latents, tau, generator)


METADATA_KEY = "percept-fusion"


def save_fusion(denoiser: LatentDenoiser, card: dict, path, *, half: bool = False):
    """One safetensors file: the denoiser's tensors and, in its metadata, the card that rebuilds it."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in denoiser.state_dict().items()}
    if half:  # the normalising scales stay float32: they are data, not learned weights
        state = {k: v.half() if k.startswith("net.") and v.is_floating_point() else v
                 for k, v in state.items()}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(card, sort_keys=True)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_fusion(name_or_path) -> tuple[dict, dict]:
    """(state dict, card) from a zoo name, a fusion .safetensors file or a `percept train fusion` run."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "fusion.safetensors"
        if not path.is_file():
            raise WeightsUnavailable(
                f"{name_or_path} has no fusion.safetensors: finish the run or stop it with --export"
            )
    if path.is_file() and not zoo.sidecar_path(path).is_file():
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if METADATA_KEY not in meta:
            raise WeightsUnavailable(
                f"{path} is not a fusion module file (no {METADATA_KEY!r} metadata)"
            )
        return load_file(str(path)), json.loads(meta[METADATA_KEY])
    state, card = zoo.load_weights_and_card(name_or_path)
    if card.get("kind") != "fusion":
        raise PerceptError(f"{name_or_path} is a {card.get('kind')!r} model, not a fusion module")
    return state, card


def load_fusion(name_or_path, *, codec_model: nn.Module | None = None) -> LatentFusion:
    """A LatentFusion by zoo name (e.g. fusion-hyperprior-q2), file or run directory, bound to the
    codec its card names (loaded from the project zoo unless `codec_model` is given)."""

    state, card = read_fusion(name_or_path)
    net = LatentFusionNet(**card["net"])
    denoiser = LatentDenoiser(net)
    denoiser.load_state_dict({k: v.float() for k, v in state.items()})
    if codec_model is None:
        codec_model = load_project_model(card["codec"], int(card["quality"]))
    sampling = FusionSampling(**card["sampling"])
    return LatentFusion(codec_model, denoiser.requires_grad_(False), codec_name=card["codec"],
                        quality=int(card["quality"]), sampling=sampling)  # fmt: skip
