"""The training-free enhancer (paper section 3.1, eq. 9-11): add noise to the decode, then denoise.

    x_sigma = x_hat + sigma * eps            (eq. 9-10, in the prior's [-1, 1] units)
    y       = solver(x_sigma, sigma -> 0)    (eq. 11: an SDE or PF-ODE solver, or a consistency step)

Adding noise brings the decoded and real distributions closer (both are convolved with the same
Gaussian); an SDE solver then contracts the divergence further and an ODE solver preserves it
(Theorem 3.1). sigma traverses the perception-distortion trade-off (section 3.3): sigma = 0 is the
decode itself, and the recommended sigma doubles the MSE (`percept.enhancer.calibrate`).

`enhance` is the algorithm on a batch, for a given numeric sigma. `Enhancer` binds the models once
(the prior, and optionally a consistency model for the fast presets) with an `EnhancerConfig`,
handles whole images of any size, and looks sigma up in the calibration table by the identity of the
model it runs; a sigma signalled in the file is resolved before it (`percept.enhancer.signalling`).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn
from tqdm import tqdm

from percept.core.denoiser import ProjectedDenoiser, is_consistency_model, trained_sigma_max
from percept.core.precision import PRECISIONS, FastPath, compiled, native_bf16
from percept.core.samplers import get_sampler, per_image_generators, randn_like
from percept.core.schedules import halving_sigmas, karras_sigmas
from percept.core.tiling import TiledDenoiser, pad_to_multiple
from percept.enhancer.presets import EnhancerConfig, as_config, check_preset
from percept.enhancer.table import CalibrationMissing, lookup_sigma, model_sha256
from percept.errors import PerceptError
from percept.hub.zoo import load_denoiser

PAD_MULTIPLE = 32  # fully convolutional priors see a size their down/up-sampling can round-trip


def check_sigma(sigma) -> float:
    """sigma as a float, refusing what is not a finite number >= 0 (one line, no traceback)."""
    if isinstance(sigma, str):
        raise PerceptError(
            f"sigma must be a number, got {sigma!r} (sigma 'auto' is resolved by an Enhancer: "
            "Enhancer.table_sigma, or a sigma signalled in the file)"
        )
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise PerceptError(f"sigma must be a number, got {sigma!r}") from None
    if not math.isfinite(value) or value < 0:
        raise PerceptError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return value


def enhance(
    x_hat: Tensor,
    denoiser,
    sigma: float,
    config: EnhancerConfig | str = "medium",
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    operator=None,
    project=None,
    precision: str = "fp32",
    channels_last: bool | None = None,
    progress: bool = False,
    callback=None,
) -> Tensor:
    """Enhance decoded images x_hat [B,C,H,W] in [0,1] at noise level `sigma` (the denoiser's
    [-1,1] units); returns float [B,C,H,W] in [0,1].

    config: an `EnhancerConfig` or its key ("medium", "fast", "medium@20", "euler@2", ...).
    generator: see `percept.core.samplers` (per-image noise).
    operator: DPS (preset "slow") needs a differentiable A on [0,1] images; its measurement is x_hat.
    project: a projection onto the images the codec's file allows (a JPEG file's quantisation
    cells, `percept.codecs.jpeg_consistency.projector_for`), a function of [B,C,H,W] tensors in
    [0,1] of x_hat's size. It is applied to every estimate of the clean image the sampler makes
    (each later step starts from a consistent estimate and repairs what the projection leaves, as in
    projection-based posterior sampling) and to the result.
    precision: "fp32", or "bf16" for the network's convolutions under bfloat16 autocast (the
    sampler's arithmetic stays float32); fast only where the hardware has bf16
    (`benchmarks/fast_decode.py` measures both and their difference).
    channels_last: run the network on NHWC tensors; None does so on CPU, where oneDNN's
    convolutions prefer it (`benchmarks/fast_decode.py --layout both` measures it).
    """
    config = as_config(config)
    p = config.schedule
    if precision not in PRECISIONS:
        raise PerceptError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not native_bf16(x_hat.device.type):
        warnings.warn(
            f"bf16 on this {x_hat.device.type} is emulated (no AVX512-BF16 or AMX): it runs far "
            "slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    sigma = check_sigma(sigma)
    check_preset(p, denoiser, has_operator=operator is not None)
    top = trained_sigma_max(denoiser) if p.sampler == "consistency" else None
    if top is not None and sigma > top * (1 + 1e-6):
        warnings.warn(
            f"sigma above {top:g}, the top of the noise levels this consistency model was "
            "distilled on: its step extrapolates there (expect worse output; the medium preset "
            "runs the prior at any sigma)",
            RuntimeWarning,
            stacklevel=2,
        )
    if project is not None and p.sampler == "dps":
        raise PerceptError(
            "a projection does not go with DPS (preset slow): its gradient would pass through it; "
            "use another preset"
        )
    if x_hat.ndim != 4:
        raise PerceptError(f"x_hat must be [B,C,H,W], got shape {tuple(x_hat.shape)}")
    if sigma == 0:
        return x_hat.float().clamp(0, 1)

    x = x_hat.float() * 2 - 1
    gens = per_image_generators(generator, x.shape[0])
    x_sigma = x + sigma * randn_like(x, gens)  # eq. 9-10
    if x.device.type == "cpu" if channels_last is None else channels_last:
        x_sigma = x_sigma.contiguous(memory_format=torch.channels_last)
    if p.sampler == "consistency":
        sigmas = halving_sigmas(p.steps, sigma).to(x.device)
    else:
        sigmas = karras_sigmas(p.steps, sigma, p.sigma_min, p.rho).to(x.device)
    kwargs = {}
    if p.sampler == "dps":
        kwargs = {
            "measurement": x_hat.float(),
            "operator": lambda d: operator((d + 1) / 2),
            "zeta": p.zeta,
        }
    if project is not None:
        denoiser = ProjectedDenoiser(denoiser, project)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = get_sampler(p.sampler)(
            denoiser,
            x_sigma,
            sigmas,
            generator=gens,
            callback=callback,
            progress=progress,
            **kwargs,
        )
    y = ((y.detach() + 1) / 2).clamp(0, 1).float()
    return y if project is None else project(y)


def load_prior(name_or_path: str) -> nn.Module:
    """A denoiser for whole images from any model name `percept.hub.zoo.load_denoiser` reads: zoo
    names, files, run directories, and diffusers models (`hf:ID` or a local folder), tiled when the
    model has a fixed input size."""
    return load_denoiser(name_or_path)


def _runnable(model: nn.Module, device: torch.device, fast_path: FastPath) -> nn.Module:
    """A denoiser on `device`, its network compiled when the fast path says so (a tiled model's
    inner network: the tiling loop stays eager)."""
    model = model.to(device) if isinstance(model, nn.Module) else model
    if fast_path.compile:
        if isinstance(model, TiledDenoiser):
            model.denoiser = compiled(model.denoiser, device)
        else:
            model = compiled(model, device)
    return model


class Enhancer:
    """Paper 1's enhancer with its models bound once: `Enhancer(prior, config)(x_hat, sigma)`.

    prior: the diffusion prior (any denoiser). consistency_model: an optional one-step model; the
    presets that sample with it (fast, fast-2) run on it, every other preset on the prior (a prior
    that is itself a consistency model runs the fast presets too). The names (a zoo name or path)
    identify the models in the calibration table and in file headers; `from_pretrained` records
    them, a model passed as an object has none and then needs a numeric sigma.
    """

    def __init__(
        self,
        prior: nn.Module,
        config: EnhancerConfig | str = "medium",
        *,
        consistency_model: nn.Module | None = None,
        device: str | torch.device = "cpu",
        fast_path: FastPath | None = None,
        prior_name: str | None = None,
        consistency_model_name: str | None = None,
    ) -> None:
        self.config = as_config(config)
        self.device = torch.device(device)
        self.fast_path = FastPath.fastest(self.device) if fast_path is None else fast_path
        self.prior_name, self.consistency_model_name = prior_name, consistency_model_name
        self._models = {
            "prior": _runnable(prior, self.device, self.fast_path),
            "cm": None
            if consistency_model is None
            else _runnable(consistency_model, self.device, self.fast_path),
        }
        self.prior, self.consistency_model = self._models["prior"], self._models["cm"]

    @classmethod
    def from_pretrained(
        cls,
        prior: str,
        config: EnhancerConfig | str = "medium",
        *,
        consistency_model: str | None = None,
        device: str | torch.device = "cpu",
        fast_path: FastPath | None = None,
    ) -> Enhancer:
        """Load the models by name (`load_prior`: zoo names, files, run directories, diffusers)."""
        return cls(
            load_prior(prior),
            config,
            consistency_model=load_prior(consistency_model) if consistency_model else None,
            device=device,
            fast_path=fast_path,
            prior_name=prior,
            consistency_model_name=consistency_model,
        )

    def with_config(self, config: EnhancerConfig | str) -> Enhancer:
        """The same models under another setting (nothing is loaded or compiled again)."""
        other = copy.copy(self)
        other.config = as_config(config)
        return other

    @property
    def _runs_on_consistency_model(self) -> bool:
        return self.config.uses_consistency_model and self.consistency_model is not None

    @property
    def denoiser(self) -> nn.Module:
        """The model this setting runs: the consistency model for the fast presets when one is
        bound, else the prior."""
        return self.consistency_model if self._runs_on_consistency_model else self.prior

    @property
    def model_name(self) -> str | None:
        """The name of the model this setting runs (its calibration table and header identity)."""
        return self.consistency_model_name if self._runs_on_consistency_model else self.prior_name

    @property
    def supported(self) -> bool:
        """Whether the bound models can run this setting (the fast presets need a consistency
        model: bound as one, or a prior that is one)."""
        return not self.config.schedule.needs_consistency_model or is_consistency_model(
            self.denoiser
        )

    def model_sha256(self) -> str | None:
        return model_sha256(self.model_name) if self.model_name else None

    def table_sigma(self, codec: str, quality: int | None) -> float:
        """The calibration table's sigma for this setting and model on (codec, quality).

        A consistency setting without its own entry falls back to the plain setting's sigma with
        a warning: the projected result's MSE ratio then lands below the rule's 2."""
        if not self.model_name:
            raise PerceptError(
                "sigma 'auto' needs the model's name to look it up in the calibration table: "
                "load the enhancer with Enhancer.from_pretrained, or pass a numeric sigma"
            )
        try:
            return lookup_sigma(codec, quality, self.model_name, self.config)
        except CalibrationMissing as exc:
            if not self.config.consistency:
                raise
            plain = replace(self.config, consistency=False)
            try:
                sigma = lookup_sigma(codec, quality, self.model_name, plain)
            except CalibrationMissing:
                raise exc from None
            warnings.warn(
                f"{exc}; using the {plain.key} setting's sigma, at which the projected result's "
                "MSE ratio lands below the rule's 2",
                RuntimeWarning,
                stacklevel=2,
            )
            return sigma

    def __call__(
        self,
        x_hat: Tensor,
        sigma: float,
        *,
        seed: int = 0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        project=None,
        operator=None,
        progress: bool = False,
    ) -> Tensor:
        """One decoded image [1,C,H,W] (or a batch of one size) enhanced as `percept decode
        --enhance` does it: padded to a size the prior's down/up-sampling round-trips (unless it
        is tiled), noise from `torch.Generator().manual_seed(seed)` (or `generator`), cropped back.
        `project` (see `enhance`; required by a consistency setting) applies to the image's
        region. The encoder's per-image calibration and `percept eval` call exactly this, so the
        decoder reproduces the encoder's result."""
        if self.config.consistency and project is None:
            raise PerceptError(
                f"the {self.config.key} setting projects into the file's quantisation cells: "
                "give the file's projection (a JPEG file)"
            )
        if project is not None and not self.config.consistency:
            raise PerceptError(
                "a projection goes with a consistency setting (EnhancerConfig(consistency=True)), "
                "so its calibrated sigma is the one used"
            )
        if x_hat.ndim != 4:
            raise PerceptError(f"x_hat must be [B,C,H,W], got shape {tuple(x_hat.shape)}")
        denoiser = self.denoiser
        h, w = x_hat.shape[-2:]
        tiled = isinstance(denoiser, TiledDenoiser)
        x_in = x_hat if tiled else pad_to_multiple(x_hat, PAD_MULTIPLE)[0]
        project_padded = None
        if project is not None:

            def project_padded(y: Tensor) -> Tensor:  # the image's region only; padding is scratch
                if y.shape[-2:] == (h, w):
                    return project(y)
                out = y.clone()
                out[..., :h, :w] = project(y[..., :h, :w])
                return out

        y = enhance(
            x_in.to(self.device),
            denoiser,
            sigma,
            self.config,
            operator=operator,
            generator=torch.Generator().manual_seed(int(seed)) if generator is None else generator,
            progress=progress,
            precision=self.fast_path.precision,
            channels_last=self.fast_path.channels_last,
            project=project_padded,
        )
        return y[..., :h, :w]

    def many(
        self,
        x_hats: list[Tensor],
        sigmas: list[float],
        seeds: list[int],
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> list[Tensor]:
        """Many decoded images [1,C,H,W], each at its own sigma and seed, enhanced in batches of
        images of one size and one sigma: each output equals what `self(x_hat, sigma, seed=seed)`
        gives alone (every image draws its noise from its own generator), only faster on a GPU.
        Outputs come back in the input order, on the CPU."""
        if not len(x_hats) == len(sigmas) == len(seeds):
            raise PerceptError("many: give one sigma and one seed per image")
        groups: dict[tuple, list[int]] = {}
        for i, (x, sigma) in enumerate(zip(x_hats, sigmas)):
            groups.setdefault((tuple(x.shape), float(sigma)), []).append(i)
        out: list[Tensor | None] = [None] * len(x_hats)
        chunks = [
            (sigma, members[k : k + batch_size])
            for (_, sigma), members in groups.items()
            for k in range(0, len(members), batch_size)
        ]
        for sigma, members in tqdm(chunks, desc="enhance", unit="batch", disable=not progress):
            gens = [
                per_image_generators(torch.Generator().manual_seed(int(seeds[i])), 1)[0]
                for i in members
            ]
            y = self(torch.cat([x_hats[i] for i in members]), sigma, generator=gens)
            for i, image in zip(members, y.cpu()):
                out[i] = image[None]
        return out
