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

import math
from dataclasses import dataclass, replace

from percept.core.denoiser import is_consistency_model
from percept.core.precision import PRECISIONS, native_bf16
from percept.core.samplers import SAMPLERS
from percept.core.schedules import SIGMA_MIN
from percept.errors import PerceptError

__all__ = [
    "PRECISIONS",
    "PRESETS",
    "EnhancerConfig",
    "Preset",
    "as_config",
    "check_preset",
    "get_preset",
    "is_consistency_model",
    "native_bf16",
]


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


CONSISTENCY_SUFFIX = "+consistency"


@dataclass(frozen=True)
class EnhancerConfig:
    """One enhancer setting: a preset (or an explicit sampler), its steps and DPS weight, and
    whether every estimate is projected into the JPEG file's quantisation cells (`consistency`).

    Frozen and hashable. `key` is its one name: the calibration table's preset part, what a file
    header's signalled sigma is matched on and what an evaluation method says after `enhance:`.
    A setting that samples differently gets a different key, so a sigma calibrated for one is
    never applied to another: `medium` (its own 6 steps), `medium@20`, `euler@2`,
    `fast+consistency`, `slow~zeta0.5`. `EnhancerConfig.from_key` reads a key back.
    """

    preset: str = "medium"
    steps: int | None = None
    zeta: float | None = None
    consistency: bool = False
    sampler: str | None = None  # an explicit sampler instead of a preset (then `preset` is unused)

    def __post_init__(self) -> None:
        if self.sampler is not None:
            if self.sampler not in SAMPLERS:
                raise PerceptError(
                    f"unknown sampler {self.sampler!r}: choose from {', '.join(SAMPLERS)}"
                )
            object.__setattr__(self, "preset", self.sampler)
        else:
            get_preset(self.preset)
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
                raise PerceptError(f"steps must be a whole number >= 1, got {self.steps!r}")
            if self.sampler is None and self.steps == PRESETS[self.preset].steps:
                object.__setattr__(self, "steps", None)  # the preset's own: one key per setting
        if self.zeta is not None:
            if not (isinstance(self.zeta, (int, float)) and math.isfinite(self.zeta) and self.zeta >= 0):
                raise PerceptError(f"zeta must be a finite number >= 0, got {self.zeta!r}")
            if float(self.zeta) == self._base().zeta:
                object.__setattr__(self, "zeta", None)
            else:
                object.__setattr__(self, "zeta", float(self.zeta))
        object.__setattr__(self, "consistency", bool(self.consistency))

    def _base(self) -> Preset:
        if self.sampler is None:
            return PRESETS[self.preset]
        like = next((p for p in PRESETS.values() if p.sampler == self.sampler), PRESETS["medium"])
        return Preset(
            self.sampler,
            self.sampler,
            like.steps,
            zeta=like.zeta,
            needs_consistency_model=like.needs_consistency_model and like.sampler == self.sampler,
            needs_differentiable_codec=self.sampler == "dps",
        )

    @property
    def schedule(self) -> Preset:
        """The resolved preset: sampler, steps, schedule and what it needs."""
        p = self._base().with_steps(self.steps)
        p = p if self.zeta is None else replace(p, zeta=self.zeta)
        return replace(p, name=self.key)

    @property
    def uses_consistency_model(self) -> bool:
        return self.schedule.sampler == "consistency"

    @property
    def key(self) -> str:
        key = self.preset
        if self.sampler is not None:
            key += f"@{self.steps or self._base().steps}"
        elif self.steps is not None:
            key += f"@{self.steps}"
        if self.zeta is not None:
            key += f"~zeta{self.zeta:g}"
        return key + (CONSISTENCY_SUFFIX if self.consistency else "")

    @classmethod
    def from_key(cls, key: str) -> EnhancerConfig:
        """The config a `key` names (`medium`, `medium@20`, `euler@2`, `fast+consistency`, ...)."""
        if not isinstance(key, str) or not key:
            raise PerceptError(f"bad enhancer setting {key!r}: use a preset name such as medium")
        rest, consistency = key.removesuffix(CONSISTENCY_SUFFIX), key.endswith(CONSISTENCY_SUFFIX)
        rest, _, zeta = rest.partition("~zeta")
        name, _, steps = rest.partition("@")
        try:
            n_steps = int(steps) if steps else None
            z = float(zeta) if zeta else None
        except ValueError:
            raise PerceptError(
                f"bad enhancer setting {key!r}: use PRESET[@STEPS][~zetaZ][+consistency]"
            ) from None
        if name in PRESETS:
            return cls(name, n_steps, z, consistency)
        if name in SAMPLERS:
            return cls(steps=n_steps, zeta=z, consistency=consistency, sampler=name)
        raise PerceptError(
            f"unknown preset {name!r} in {key!r}: choose from {', '.join(PRESETS)} or a sampler "
            f"({', '.join(SAMPLERS)}) with @STEPS"
        )


def as_config(setting: EnhancerConfig | str) -> EnhancerConfig:
    """An EnhancerConfig from itself or its key."""
    return setting if isinstance(setting, EnhancerConfig) else EnhancerConfig.from_key(setting)


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
