"""The codec contract every registered codec meets: real bitstreams only (no estimated rates)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    """encode: [1,3,H,W] float in [0,1] -> payload bytes; decode: payload bytes -> [1,3,H,W].

    `name` is the registry name, `quality` the user-facing quality knob (its range is per codec).
    bpp is always 8 * len(bytes) / (H * W), computed from real bytes (see `percept.codecs.container`).

    Optional, declared by the codecs that have them and read through the helpers below:
    - `params`: a JSON-able dict recorded in the file header (`quality` is added when missing);
    - `check_params(params)`: called by `decode_file` with the header's parameters, to refuse a
      file this instance cannot decode (e.g. one made with other weights);
    - `operator()`: the codec as a differentiable operator A on [0,1] images (learned codecs; the
      slow preset's DPS constraint needs one);
    - `projector(payload)`: the projection onto the images the file allows (JPEG: its quantisation
      cells; the enhancer's consistency settings need one).
    """

    name: str
    quality: int

    def encode(self, x: torch.Tensor) -> bytes: ...

    def decode(self, data: bytes) -> torch.Tensor: ...


def operator_of(codec) -> torch.nn.Module | None:
    """The differentiable operator a codec declares (`codec.operator()`), else None."""
    make = getattr(codec, "operator", None)
    return make() if callable(make) else None


def has_projector(codec) -> bool:
    """Whether a codec declares a projection of its files' cells (`codec.projector(payload)`)."""
    return callable(getattr(codec, "projector", None))
