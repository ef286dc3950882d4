"""Decoding percept files through a fusion module: the file and the base codec stay as they are.

The module reads the same bitstream the base codec reads (nothing is signalled), entropy-decodes the
latents, fuses them at tau and synthesises with the frozen g_s. tau = 0 goes through the base
codec's own decode, so its output is the base decode bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from percept.codecs.compressai_codec import CompressAICodec
from percept.codecs.container import Record, unpack
from percept.core.images import quantize
from percept.errors import CodecError, PerceptError
from percept.fusion.latents import from_strings
from percept.fusion.module import LatentFusion, check_tau

# Shipped modules as data: codec -> quality -> zoo name (one module per rate).
FUSION_MODULES: dict[str, dict[int, str]] = {
    "percept-hyperprior": {q: f"fusion-hyperprior-q{q}" for q in (1, 2, 3, 4)},
}


def fusion_name_for(codec: str, quality: int | None) -> str:
    """The zoo name of the shipped fusion module for a codec at a rate, or one line why none."""
    if codec not in FUSION_MODULES:
        learned = ", ".join(FUSION_MODULES)
        raise PerceptError(
            f"{codec} has no latent fusion module: paper 2's module needs a learned codec ({learned})"
        )
    if quality not in FUSION_MODULES[codec]:
        raise PerceptError(
            f"no fusion module for {codec} q{quality}: shipped for q{sorted(FUSION_MODULES[codec])}"
        )
    return FUSION_MODULES[codec][quality]


def check_record(fusion: LatentFusion, record: Record) -> None:
    """Refuse a file the module was not trained for (another codec, or another rate)."""
    if (record.codec, record.quality) != (fusion.codec_name, fusion.quality):
        raise PerceptError(
            f"this fusion module was trained for {fusion.codec_name} q{fusion.quality}, but the file "
            f"is {record.codec} q{record.quality}: use the module of that codec and rate"
            + ("" if record.codec in FUSION_MODULES else " (a non-learned codec has none)")
        )


def base_codec_of(fusion: LatentFusion) -> CompressAICodec:
    """The base codec as a Codec, sharing the module's frozen network."""
    return CompressAICodec(fusion.codec_model, fusion.codec_name, fusion.quality)


def decode_payload(
    fusion: LatentFusion, payload: bytes, tau: float, generator: torch.Generator | None = None,
    codec: CompressAICodec | None = None,
) -> Tensor:  # fmt: skip
    """The image [1,3,H,W] in [0,1] (8-bit values) that a payload of the module's codec decodes to."""
    tau = check_tau(tau)
    codec = codec or base_codec_of(fusion)
    if tau == 0.0:
        return codec.decode(payload)  # the base decode itself, not a computation that equals it
    # the payload's declared size, latent grid, batch and string groups are checked before the
    # entropy decoder runs (and its strings padded against over-reads): CompressAICodec.checked_payload
    height, width, strings, shape = codec.checked_payload(payload)
    try:
        latents = from_strings(fusion.codec_model, strings, torch.Size(shape))
    except Exception as exc:  # CompressAI's asserts, overflows and index errors on bad bytes
        raise CodecError(
            f"{fusion.codec_name} payload cannot be decoded ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})"
        ) from None
    x = fusion.decode_latents(latents, tau, generator)
    return quantize(x[..., :height, :width])


def decode_file_fused(
    data: bytes, fusion: LatentFusion, tau: float, seed: int = 0
) -> tuple[Tensor, Record]:
    """Decode a percept file through `fusion` at `tau` with the noise of `seed`."""
    tau = check_tau(tau)
    record = unpack(data)
    check_record(fusion, record)
    codec = base_codec_of(fusion)
    codec.check_payload(record.payload, record.height, record.width)  # before any decoding
    x = decode_payload(fusion, record.payload, tau, torch.Generator().manual_seed(seed), codec)
    if tuple(x.shape[-2:]) != (record.height, record.width):
        raise CodecError(
            f"the payload decodes to {x.shape[-2]}x{x.shape[-1]}, but the header says "
            f"{record.height}x{record.width}: the file is inconsistent"
        )
    return x, record
