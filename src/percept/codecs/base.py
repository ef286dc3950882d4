"""The codec contract every registered codec meets: real bitstreams only (no estimated rates)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    """encode: [1,3,H,W] float in [0,1] -> payload bytes; decode: payload bytes -> [1,3,H,W].

    `name` is the registry name, `quality` the user-facing quality knob (its range is per codec).
    bpp is always 8 * len(bytes) / (H * W), computed from real bytes (see `percept.codecs.container`).

    Optional, duck-typed: `params` (a JSON-able dict recorded in the file header; `quality` is added
    when missing) and `check_params(params)` (called by `decode_file` with the header's parameters,
    to refuse a file this instance cannot decode, e.g. one made with other weights).
    """

    name: str
    quality: int

    def encode(self, x: torch.Tensor) -> bytes: ...

    def decode(self, data: bytes) -> torch.Tensor: ...
