"""What a result records about how it was made: package version, git commit, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

import percept


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source tree percept was imported from, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict:
    """A small dict for results files: versions, commit, device."""

    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu"
    )
    return {
        "percept": percept.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpu": cpu_model(),
    }


def cpu_model() -> str:
    """The CPU's model name, with " (AMX)" or " (AVX512-BF16)" where it has native bf16 (timings on
    two machines that `platform` both calls x86_64 differ by 2x and more; see `percept.core.cpu`)."""
    name = platform.processor() or platform.machine() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return name
    for line in info.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "").split()
    extra = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""
    return f"{name} ({extra})" if extra else name
