"""CPU memory: let glibc keep freed tensor buffers for reuse instead of returning them to the kernel.

A UNet on a whole photo allocates and frees feature maps of tens of megabytes many times per
forward pass (a 32-channel float map of a 768x512 image is 50 MB). With glibc's default settings
every allocation above the mmap threshold (128 KiB, adapting up to at most 32 MiB) is a fresh
`mmap`, and the kernel zero-fills each of its pages on first touch; returned memory above the trim
threshold is handed back at once. PyTorch has no caching allocator on CPU, so a forward pass pays
these page faults again and again. Raising both thresholds makes large blocks come from, and go back
to, the heap, so the next forward pass reuses memory that is already mapped.

It matters for whole images, whose feature maps are far above both thresholds;
`benchmarks/fast_decode.py --allocator both` measures the gain on the machine at hand (the two
settings alternate in one process). The outputs are identical. The cost: the process keeps its
peak heap size until it exits.

`percept` commands turn this on (`percept.cli`); library users call `reuse_freed_memory()` once, or
not at all. `PERCEPT_CPU_ALLOCATOR=system` leaves glibc's settings alone, also in the commands.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGE = 2**31 - 1  # the largest value mallopt accepts for both (it takes an int)
_GLIBC_DEFAULT = 128 * 1024  # glibc's initial thresholds (DEFAULT_MMAP_THRESHOLD_MIN)
ENV = "PERCEPT_CPU_ALLOCATOR"


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and other C libraries have no mallopt; only glibc's is understood here
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return None
    return libc


def reuse_freed_memory(enable: bool = True) -> bool:
    """Raise (enable) or reset (disable) glibc's mmap and trim thresholds; True if it took effect.

    Off Linux/glibc, or with `PERCEPT_CPU_ALLOCATOR=system` in the environment, it does nothing
    and returns False. `enable=False` sets both thresholds back to glibc's initial 128 KiB (static:
    glibc's own upward adaptation stays off) and trims the heap; benchmarks use it to time both.
    """
    if enable and os.environ.get(ENV, "").strip().lower() == "system":
        return False
    libc = _libc()
    if libc is None:
        return False
    value = _LARGE if enable else _GLIBC_DEFAULT
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, value)
    )
    if not enable:
        libc.malloc_trim(0)
    return ok
