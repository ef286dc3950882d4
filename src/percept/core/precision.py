"""How a network's arithmetic runs: fp32, or bf16 autocast where the hardware computes it natively."""

from __future__ import annotations

import torch

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
