"""The training-free enhancer (paper section 3.1, eq. 9-11): add noise to the decode, then denoise.

    x_sigma = x_hat + sigma * eps            (eq. 9-10, in the prior's [-1, 1] units)
    y       = solver(x_sigma, sigma -> 0)    (eq. 11: an SDE or PF-ODE solver, or a consistency step)

Adding noise brings the decoded and real distributions closer (both are convolved with the same
Gaussian); an SDE solver then contracts the divergence further and an ODE solver preserves it
(Theorem 3.1). sigma traverses the perception-distortion trade-off (section 3.3): sigma = 0 is the
decode itself, and the recommended sigma doubles the MSE (see `percept.enhancer.calibrate`).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from percept.core.samplers import per_image_generators, randn_like
from percept.core.schedules import halving_sigmas, karras_sigmas
from percept.enhancer.presets import (
    PRECISIONS,
    PRESETS,
    Preset,
    check_preset,
    get_preset,
    native_bf16,
)
from percept.errors import PerceptError

PAD_MULTIPLE = 32  # fully convolutional priors see a size their down/up-sampling can round-trip


def _round_ste(x: Tensor) -> Tensor:
    """Rounding forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


class CompressAIOperator(nn.Module):
    """The differentiable codec operator A(x) = g_s(round_ste(g_a(x))) of a CompressAI model.

    x in [0, 1], [B,3,H,W]; padded by edge replication to the model's downsampling factor (as
    `CompressAICodec` does) and cropped back. Rounding the latent without the entropy model's means
    is exact for scale-only hyperpriors (bmshj2018) and an approximation for mean-scale models.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not (hasattr(model, "g_a") and hasattr(model, "g_s")):
            raise PerceptError(
                f"{type(model).__name__} has no g_a/g_s transforms: not a CompressAI model"
            )
        self.model = model.eval().requires_grad_(False)
        self.multiple = int(getattr(model, "downsampling_factor", 64))

    def forward(self, x: Tensor) -> Tensor:
        from percept.core.tiling import pad_to_multiple

        padded, (h, w) = pad_to_multiple(x, self.multiple)
        return self.model.g_s(_round_ste(self.model.g_a(padded)))[..., :h, :w].clamp(0, 1)


def operator_for_codec(codec) -> CompressAIOperator | None:
    """A differentiable operator for a codec that has one (CompressAI models), else None."""
    model = getattr(codec, "model", None)
    return CompressAIOperator(model) if model is not None and hasattr(model, "g_a") else None


def resolve_preset(
    preset: str | Preset | None, sampler: str | None, steps: int | None, zeta: float | None
) -> Preset:
    """A named preset, or an explicit sampler (then `preset` is ignored) with `steps`."""
    if sampler is not None:
        from percept.core.samplers import get_sampler

        get_sampler(sampler)
        like = next((p for p in PRESETS.values() if p.sampler == sampler), PRESETS["medium"])
        return Preset(
            f"{sampler}-{steps or like.steps}",
            sampler,
            steps or like.steps,
            zeta=like.zeta if zeta is None else zeta,
            needs_differentiable_codec=sampler == "dps",
        )
    p = preset if isinstance(preset, Preset) else get_preset(preset or "medium")
    p = p.with_steps(steps)
    return p if zeta is None else replace(p, zeta=zeta)


def enhance(
    x_hat: Tensor,
    denoiser,
    sigma: float | str,
    preset: str | Preset | None = "medium",
    *,
    sampler: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    operator=None,
    zeta: float | None = None,
    codec=None,
    quality: int | None = None,
    prior_name: str | None = None,
    callback=None,
    progress: bool = False,
    precision: str = "fp32",
    project=None,
    channels_last: bool | None = None,
) -> Tensor:
    """Enhance decoded images x_hat [B,C,H,W] in [0,1]; returns float [B,C,H,W] in [0,1].

    sigma: noise level in the denoiser's [-1,1] units, or "auto" (calibration table lookup by
    codec (a name or a codec object), quality, prior_name and the preset's name). preset: a name of
    `PRESETS`; or give `sampler` (consistency, dpmpp_2m, euler, euler_ancestral, euler_maruyama, dps)
    and `steps`.
    DPS (preset "slow") needs `operator` (a differentiable A on [0,1] images) or a `codec` with a
    CompressAI model; its measurement is x_hat. generator: see `percept.core.samplers` (per-image noise).
    precision: "fp32", or "bf16" to run the network's convolutions under bfloat16 autocast (the
    sampler's arithmetic stays float32); on CPUs with AMX or AVX512-BF16 it is 2-3x faster, and
    `benchmarks/fast_decode.py` measures both with their difference.
    project: a projection onto the images the codec's file allows (a JPEG file's quantisation
    cells, `percept.codecs.jpeg_consistency.projector_for`); a function of [B,C,H,W] tensors in
    [0,1] of x_hat's size. It is applied to the sampler's every estimate of the clean image (so
    each later step starts from a consistent estimate and repairs what the projection leaves, as in
    projection-based posterior sampling) and to the result. With one step this is the same as
    projecting the result only; with the 6-step `medium` preset on JPEG q15 it restored far more
    realism at the same sigma (Kodak crops: SWD 41.2 against 46.8 projecting the result only).
    channels_last: run the network on channels-last (NHWC) tensors; None (default) does so on CPU,
    where oneDNN's convolutions prefer it (a fast-preset decode of a 768x512 image: 1.22x faster on a
    2-core AMD EPYC; outputs equal to ~1e-5). `benchmarks/fast_decode.py --layout both` measures it.
    """
    if precision not in PRECISIONS:
        raise PerceptError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not native_bf16(x_hat.device.type):
        warnings.warn(
            f"bf16 on this {x_hat.device.type} is emulated (no AVX512-BF16 or AMX): it runs far "
            "slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    p = resolve_preset(preset, sampler, steps, zeta)
    if isinstance(sigma, str):
        if sigma != "auto":
            raise PerceptError(f"sigma must be a number or 'auto', got {sigma!r}")
        sigma = _auto_sigma(codec, quality, prior_name, p.name, consistency=project is not None)
    sigma = float(sigma)
    if sigma < 0:
        raise PerceptError(f"sigma must be >= 0, got {sigma}")
    if p.sampler == "dps" and operator is None and codec is not None and not isinstance(codec, str):
        operator = operator_for_codec(codec)
    check_preset(p, denoiser, has_operator=operator is not None)
    top = _trained_sigma_max(denoiser) if p.sampler == "consistency" else None
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

    from percept.core.samplers import get_sampler

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


class ProjectedDenoiser(torch.nn.Module):
    """D'(x, sigma) = P(D(x, sigma)): a denoiser whose clean-image estimates are projected by
    `project` (a function of [B,C,H,W] images in [0,1]; the denoiser works in [-1,1])."""

    def __init__(self, denoiser, project) -> None:
        super().__init__()
        self.denoiser, self.project = denoiser, project  # `denoiser`: presets see through it
        self.sigma_min = getattr(denoiser, "sigma_min", 0.0)

    def forward(self, x: Tensor, sigma) -> Tensor:
        d = self.denoiser(x, sigma).float()
        return self.project(((d + 1) / 2).clamp(0, 1)) * 2 - 1


def _trained_sigma_max(denoiser) -> float | None:
    """The top noise level a consistency model was distilled on, looking through wrappers
    (`denoiser` attributes, as `presets.is_consistency_model` does); None when not recorded."""
    while denoiser is not None:
        top = getattr(denoiser, "sigma_max", None)
        if isinstance(top, (int, float)):
            return float(top)
        denoiser = getattr(denoiser, "denoiser", None)
    return None


def _auto_sigma(
    codec, quality: int | None, prior_name: str | None, preset: str, consistency: bool = False
) -> float:
    """The table's sigma; with `consistency` the entry calibrated with the projection, or when
    there is none the plain preset's, with a warning (the MSE ratio then lands below the rule's)."""
    from percept.enhancer.calibrate import CalibrationMissing, lookup_sigma, table_preset

    if codec is None or prior_name is None:
        raise PerceptError(
            "sigma='auto' needs codec=, quality= and prior_name= to look up the calibration"
        )
    name = codec if isinstance(codec, str) else codec.name
    if quality is None and not isinstance(codec, str):
        quality = getattr(codec, "quality", None)
    if consistency:
        try:
            return lookup_sigma(name, quality, prior_name, table_preset(preset, True))
        except CalibrationMissing as exc:
            warnings.warn(
                f"{exc}; using the plain {preset} preset's sigma, at which the projected result's "
                "MSE ratio lands below the rule's 2",
                RuntimeWarning,
                stacklevel=3,
            )
    return lookup_sigma(name, quality, prior_name, preset)


def load_prior(name_or_path: str):
    """A Denoiser: diffusers (`hf:ID` or a local diffusers folder) or the percept zoo (name, file, run)."""
    path = Path(name_or_path)
    is_diffusers_dir = path.is_dir() and any(
        (path / f).exists() for f in ("model_index.json", "scheduler", "scheduler_config.json")
    )
    if name_or_path.startswith("hf:") or is_diffusers_dir:
        from percept.models import from_pretrained

        return from_pretrained(name_or_path.removeprefix("hf:"))
    try:
        from percept.hub.zoo import load_denoiser
    except ImportError as exc:
        raise PerceptError(
            f"the model zoo is not available in this build ({exc}); pass a diffusers folder"
        ) from None
    return load_denoiser(name_or_path)


def load_enhancer_prior(name_or_path: str):
    """`load_prior`, wrapped for whole images: a fixed-size model is tiled with 1/8 overlap."""
    from percept.core.tiling import TiledDenoiser

    denoiser = load_prior(name_or_path)
    size = getattr(denoiser, "sample_size", None)
    return TiledDenoiser(denoiser, int(size), int(size) // 8) if size else denoiser


def enhance_image(
    x_hat: Tensor,
    denoiser,
    sigma: float | str,
    preset: str | Preset,
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    operator=None,
    codec=None,
    quality: int | None = None,
    prior_name: str | None = None,
    progress: bool = False,
    precision: str = "fp32",
    project=None,
) -> Tensor:
    """One decoded image [1,C,H,W] enhanced as `percept decode --enhance` does it: padded to a size
    the prior's down/up-sampling round-trips (unless it is tiled), noise from
    `torch.Generator().manual_seed(seed)` (or `generator`), cropped back; `project` (see `enhance`)
    applies to the image's region. The encoder's per-image calibration (`percept.enhancer.signalling`) and
    `percept eval` call exactly this, so the decoder reproduces the encoder's result."""
    from percept.core.tiling import TiledDenoiser, pad_to_multiple

    h, w = x_hat.shape[-2:]
    tiled = isinstance(denoiser, TiledDenoiser)
    x_in = x_hat if tiled else pad_to_multiple(x_hat, PAD_MULTIPLE)[0]
    project_padded = None
    if project is not None:

        def project_padded(y: Tensor) -> Tensor:  # the image's region only; the padding is scratch
            if y.shape[-2:] == (h, w):
                return project(y)
            out = y.clone()
            out[..., :h, :w] = project(y[..., :h, :w])
            return out

    y = enhance(
        x_in,
        denoiser,
        sigma,
        preset,
        steps=steps,
        operator=operator,
        codec=codec,
        quality=quality,
        prior_name=prior_name,
        generator=torch.Generator().manual_seed(int(seed)) if generator is None else generator,
        progress=progress,
        precision=precision,
        project=project_padded,
    )
    return y[..., :h, :w]


def enhance_decoded(x_hat: Tensor, record, args) -> Tensor:
    """The CLI's `percept decode ... --enhance PRESET --prior P --sigma auto|VALUE [--seed N] [--steps N]`.

    With `--sigma auto` a sigma the encoder signalled in the file for this preset, prior and
    steps (`percept encode --signal-sigma`) is used with the encoder's seed (unless --seed is
    given); otherwise the calibration table's. Which one was used is said on stderr. With
    `--consistency` (JPEG) every estimate is projected into the file's cells, and `--sigma auto`
    takes a sigma calibrated with the projection: signalled with `percept encode --consistency`,
    else the table's `<preset>+consistency` entry.
    """
    import sys

    from percept.enhancer.signalling import signalled_entry

    if not getattr(args, "prior", None):
        raise PerceptError(
            "--enhance needs --prior NAME_OR_PATH (a zoo name, weights file or diffusers folder)"
        )
    preset = get_preset(args.enhance).with_steps(args.steps)
    project = None
    if getattr(args, "consistency", False):
        from percept.codecs.jpeg_consistency import projector_for

        project = projector_for(record.codec, record.payload)
    denoiser = load_enhancer_prior(args.prior)
    operator = None
    if preset.needs_differentiable_codec:
        from percept.codecs import get_codec

        options = {"weights": args.weights} if getattr(args, "weights", None) else {}
        operator = operator_for_codec(get_codec(record.codec, record.quality, **options))
    sigma, seed = args.sigma, getattr(args, "seed", None)
    if sigma == "auto":
        entry, why_not = signalled_entry(
            record, preset.name, args.prior, args.steps, consistency=project is not None
        )
        if entry is not None:
            sigma = entry["sigma"]
            seed = entry["seed"] if seed is None else seed
            print(
                f"percept decode: sigma {sigma:g} signalled in the file (calibrated on this image "
                f"for {preset.name} with {args.prior}, seed {entry['seed']})",
                file=sys.stderr,
            )
        elif why_not:
            print(f"percept decode: note: {why_not}; using the calibration table", file=sys.stderr)
    else:
        try:
            sigma = float(sigma)
        except ValueError:
            raise PerceptError(f"--sigma must be 'auto' or a number, got {sigma!r}") from None
    return enhance_image(
        x_hat,
        denoiser,
        sigma,
        preset,
        seed=0 if seed is None else seed,
        operator=operator,
        codec=record.codec,
        quality=record.quality,
        prior_name=args.prior,
        progress=True,
        precision=getattr(args, "precision", "fp32"),
        project=project,
    )
