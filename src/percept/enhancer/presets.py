"""The enhancer's presets as data (paper Table 2 and section 4.3).

| preset     | sampler         | steps | nfe | needs                          | paper's budget |
| fast       | consistency     | 1     | 1   | a consistency model            | ~0.1 s         |
| fast-2     | consistency     | 2     | 2   | a consistency model            | ~0.2 s         |
| medium     | dpmpp_2m (ODE)  | 6     | 6   | any denoiser                   | ~1 s           |
| medium-sde | euler_ancestral | 30    | 30  | any denoiser                   | ~3-10 s        |
| slow       | dps (SDE + DPS) | 100   | 100 | + a differentiable codec       | >10 s          |

Section 4.3 found ODE solvers best for small budgets (discretisation error dominates; DPM-Solver)
and the Euler SDE solver best beyond that (approximation error dominates, SDEs contract it), so
"medium" is the few-step ODE and "medium-sde" the many-step SDE. nfe counts network evaluations
(a DPS step also costs a backward pass, roughly two more evaluations' worth of time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from percept.core.schedules import SIGMA_MIN
from percept.errors import PerceptError

# How the network's arithmetic runs (`enhance(precision=...)`, `percept decode --precision`).
PRECISIONS = ("fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 autocast runs on hardware bf16 here: CUDA devices that support it, CPUs with
    AVX512-BF16 or AMX. Elsewhere PyTorch emulates it, and it is far slower than fp32: a 3x3
    convolution measured 84x slower on an AVX2-only AMD EPYC (the training configs' bf16 is then
    dropped, see `percept.training.runtime.bf16_for`)."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(callable(getattr(torch.cpu, name, None)) for name in probes):
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    try:  # older PyTorch: the kernel's CPU flags
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Preset:
    """How to denoise from sigma to 0: a sampler, its number of steps and its schedule."""

    name: str
    sampler: str
    steps: int
    description: str = ""
    rho: float = 7.0
    sigma_min: float = SIGMA_MIN
    zeta: float = 0.0
    needs_consistency_model: bool = False
    needs_differentiable_codec: bool = False

    @property
    def nfe(self) -> int:
        """Network evaluations: one per nonzero noise level of the schedule (`schedules.nfe`)."""
        return self.steps

    def with_steps(self, steps: int | None) -> Preset:
        return self if steps is None else replace(self, steps=int(steps))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "fast",
            "consistency",
            1,
            "one consistency-model step from sigma (paper eq. 15)",
            needs_consistency_model=True,
        ),
        Preset(
            "fast-2",
            "consistency",
            2,
            "two consistency-model steps (re-noise to sigma/2 once)",
            needs_consistency_model=True,
        ),
        Preset("medium", "dpmpp_2m", 6, "few-step PF-ODE, DPM-Solver++(2M)"),
        Preset(
            "medium-sde", "euler_ancestral", 30, "reverse SDE, ancestral Euler steps (paper eq. 5)"
        ),
        Preset(
            "slow",
            "dps",
            100,
            "ancestral SDE steps with the DPS constraint (paper eq. 16-17)",
            zeta=1.0,
            needs_differentiable_codec=True,
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PerceptError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}") from None


def is_consistency_model(denoiser) -> bool:
    """True for one-step models: an `is_consistency_model` attribute, else percept's ConsistencyDenoiser."""
    flag = getattr(denoiser, "is_consistency_model", None)
    if flag is not None:
        return bool(flag)
    inner = getattr(denoiser, "denoiser", None)  # wrappers such as TiledDenoiser
    if inner is not None:
        return is_consistency_model(inner)
    try:
        from percept.models import ConsistencyDenoiser
    except ImportError:
        return False
    return isinstance(denoiser, ConsistencyDenoiser)


def check_preset(preset: Preset, denoiser, has_operator: bool) -> None:
    """Refuse, with what to do instead, a preset that does not fit the denoiser or the codec."""
    if preset.needs_consistency_model and not is_consistency_model(denoiser):
        fits = ", ".join(n for n, p in PRESETS.items() if not p.needs_consistency_model)
        raise PerceptError(
            f"preset {preset.name!r} needs a consistency model (one-step distilled prior), but "
            f"{type(denoiser).__name__} is not one: use a consistency-model prior, or one of {fits}"
        )
    if preset.needs_differentiable_codec and not has_operator:
        raise PerceptError(
            f"preset {preset.name!r} needs a differentiable codec for its DPS constraint (a CompressAI "
            "model); JPEG, WebP, AVIF, VTM and other external codecs are not: use 'medium' or 'medium-sde'"
        )
