"""What a result records about how it was made: package version, git commit, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

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
    import torch

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
    }
