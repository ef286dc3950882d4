"""Codecs with real bitstreams: Pillow (JPEG, WebP, AVIF, JPEG 2000), CompressAI models, and
external encoders on PATH (JPEG XL, HEIC, VTM). See `registry` for how codecs are added."""

from __future__ import annotations

from percept.codecs.base import Codec
from percept.codecs.compressai_codec import CompressAICodec
from percept.codecs.registry import (
    CodecInfo,
    codec_info,
    codec_names,
    get_codec,
    list_codecs,
    register_codec,
    unregister_codec,
)

__all__ = [
    "Codec",
    "CompressAICodec",
    "CodecInfo",
    "codec_info",
    "codec_names",
    "get_codec",
    "list_codecs",
    "register_codec",
    "unregister_codec",
]
