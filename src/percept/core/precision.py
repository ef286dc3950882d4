"""How a network's arithmetic runs: fp32, or bf16 autocast where the hardware computes it natively."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from percept.errors import PerceptError

PRECISIONS = ("fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 autocast runs on hardware bf16 here: CUDA devices that support it, CPUs with
    AVX512-BF16 or AMX. Elsewhere PyTorch emulates it, many times slower than fp32 (the training
    configs' bf16 is then dropped, see `percept.training.runtime.bf16_for`)."""
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
class FastPath:
    """How a denoiser's network runs, each switch on its own so any can be turned off.

    precision: "fp32", or "bf16" autocast of the network (the samplers' arithmetic stays float32);
    channels_last: NHWC tensors (None: on CPU only, where oneDNN prefers them); compile:
    `torch.compile` of the network, on CUDA in "reduce-overhead" mode, which captures CUDA graphs
    for the static shapes of a batch (a new shape compiles again). `FastPath.fastest(device)` is the
    default of an `Enhancer`: everything on CUDA, and on CPU exactly fp32 eager, because CPU outputs
    are the reference the book and the golden tests pin. `benchmarks/decode_speed.py` times each
    path against fp32 eager and checks their difference.
    """

    precision: str = "fp32"
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PerceptError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    @classmethod
    def fastest(cls, device: str | torch.device = "cpu") -> FastPath:
        if torch.device(device).type == "cuda":
            return cls("bf16" if native_bf16("cuda") else "fp32", channels_last=True, compile=True)
        return cls()


def compiled(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """`model` compiled for `device` (CUDA: with CUDA graphs for its static shapes)."""
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    return torch.compile(model, mode=mode, dynamic=False)
