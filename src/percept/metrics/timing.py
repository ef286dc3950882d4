"""Decoding time: the median of repeated wall-clock runs, warm-up excluded, GPU work synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call: ``median`` of ``samples`` (warm-up runs not included)."""

    median: float
    samples: tuple[float, ...]
    warmup: int
    device: str

    def __str__(self) -> str:
        spread = (
            f", {min(self.samples):.4g}-{max(self.samples):.4g}" if len(self.samples) > 1 else ""
        )
        return f"{self.median:.4g} s (median of {len(self.samples)}{spread}, {self.device})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_decode(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device | None = None,
) -> Timing:
    """Time ``fn()`` (a closure that decodes one image) ``repeats`` times after ``warmup`` untimed runs.

    CUDA launches are asynchronous, so on a GPU the clock is read only after
    ``torch.cuda.synchronize``: before the start (earlier work must not be billed to this call) and
    after ``fn`` returns (its kernels must have finished). ``device`` defaults to the current CUDA
    device when CUDA is initialised, else the CPU. Warm-up runs absorb one-off costs (cuDNN autotune,
    lazy allocation, first-call imports) that a steady-state decoder does not pay; the median resists
    the odd slow run on a shared machine. Papers quote decoding time per image, which is what this
    measures when ``fn`` decodes one bitstream including entropy decoding.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )
    if device is None:
        device = (
            torch.device("cuda")
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else torch.device("cpu")
        )
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Timing(
        median=statistics.median(samples), samples=tuple(samples), warmup=warmup, device=name
    )
