"""The percept file: a small container around a codec's real bitstream.

Layout of format version 1 (all lengths and sizes are unsigned LEB128 varints, so a header costs
tens of bytes, not hundreds; every byte is counted in bpp):

    magic        4 bytes  b"PRCP"
    version      1 byte   1
    codec id     1 byte length n (1..64), then n ASCII bytes ([a-z0-9][a-z0-9._+-]*)
    parameters   varint length, then compact JSON (an object; sorted keys)
    height       varint (1..65535)
    width        varint (1..65535)
    payload      varint length, then the payload bytes
    CRC32        4 bytes, big-endian, over every byte before it

Any malformed input raises `ContainerError` with a one-line message saying what is wrong.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from percept.codecs.jpeg_consistency import projector_for
from percept.codecs.registry import codec_names, codec_options, get_codec
from percept.codecs.varint import encode_varint as _varint
from percept.core.images import check_pixels, one_line
from percept.errors import CodecError, ContainerError, PerceptError

MAGIC = b"PRCP"
FORMAT_VERSION = 1
MAX_SIDE = 65535
MAX_PARAMS_BYTES = 4096
MAX_CODEC_ID = 64
_CODEC_ID = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")


@dataclass(frozen=True)
class Record:
    """What a percept file holds. `file_bytes` is the size of the whole file (header included)."""

    codec: str
    params: dict = field(hash=False)
    height: int
    width: int
    payload: bytes
    version: int = FORMAT_VERSION
    file_bytes: int = 0
    crc32: int = 0

    @property
    def quality(self) -> int | None:
        return self.params.get("quality")

    @property
    def bpp(self) -> float:
        return bpp(self.file_bytes, self.height, self.width)

    @property
    def header_bytes(self) -> int:
        return self.file_bytes - len(self.payload)


def bpp(file_bytes: bytes | int, height: int, width: int) -> float:
    """Bits per pixel of a whole file: 8 * len(file) / (H * W), header and checksum included."""
    n = file_bytes if isinstance(file_bytes, int) else len(file_bytes)
    return 8.0 * n / (height * width)


class _Short(Exception):
    """Internal: the data ended in the middle of a field."""


class _Reader:
    def __init__(self, data: bytes, end: int):
        self.data, self.pos, self.end = data, 0, end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise _Short(f"ends inside the {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str, limit: int) -> int:
        value = shift = 0
        for _ in range(10):
            (byte,) = self.take(1, what)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if value > limit:
                    raise ContainerError(f"corrupted header: {what} is {value} (at most {limit})")
                return value
        raise ContainerError(f"corrupted header: the {what} field is not a valid number")


def pack(codec_id: str, params: dict, height: int, width: int, payload: bytes) -> bytes:
    """Wrap a payload in a version-1 percept container (see the module docstring)."""
    if not (1 <= len(codec_id) <= MAX_CODEC_ID and _CODEC_ID.match(codec_id)):
        raise ValueError(f"invalid codec id {codec_id!r}: use 1-64 characters of [a-z0-9._+-]")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ValueError(f"image size {height}x{width} outside 1..{MAX_SIDE}")
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(blob) > MAX_PARAMS_BYTES:
        raise ValueError(f"codec parameters take {len(blob)} bytes; at most {MAX_PARAMS_BYTES}")
    head = bytearray(MAGIC)
    head.append(FORMAT_VERSION)
    head.append(len(codec_id))
    head += codec_id.encode("ascii")
    head += _varint(len(blob)) + blob
    head += _varint(height) + _varint(width) + _varint(len(payload))
    body = bytes(head) + bytes(payload)
    return body + zlib.crc32(body).to_bytes(4, "big")


def _check_start(data: bytes) -> None:
    if len(data) == 0:
        raise ContainerError("empty file: not a percept file (0 bytes)")
    if data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise ContainerError(f"truncated percept file: only {len(data)} bytes")
        raise ContainerError(
            f"not a percept file: it starts with {bytes(data[:4])!r}, not {MAGIC!r}"
        )
    if len(data) == len(MAGIC):
        raise ContainerError("truncated percept file: it ends after the magic bytes")
    version = data[len(MAGIC)]
    if version > FORMAT_VERSION:
        raise ContainerError(
            f"made by format version {version}; this percept reads version {FORMAT_VERSION}: "
            "upgrade percept"
        )
    if version < FORMAT_VERSION:
        raise ContainerError(
            f"format version {version} was never written by percept; this percept reads version "
            f"{FORMAT_VERSION}: the file is corrupted"
        )


def _parse(data: bytes) -> tuple[str, dict, int, int, bytes]:
    reader = _Reader(data, len(data) - 4)
    reader.take(len(MAGIC) + 1, "magic")
    (n,) = reader.take(1, "codec id length")
    if not 1 <= n <= MAX_CODEC_ID:
        raise ContainerError(f"corrupted header: codec id length {n}")
    raw_id = reader.take(n, "codec id")
    try:
        codec_id = raw_id.decode("ascii")
    except UnicodeDecodeError:
        raise ContainerError("corrupted header: the codec id is not ASCII") from None
    if not _CODEC_ID.match(codec_id):
        raise ContainerError(f"corrupted header: invalid codec id {codec_id!r}")
    blob = reader.take(reader.varint("parameters length", MAX_PARAMS_BYTES), "parameters")
    try:
        params = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ContainerError("corrupted header: the codec parameters are not valid JSON") from None
    if not isinstance(params, dict):
        raise ContainerError("corrupted header: the codec parameters are not a JSON object")
    height = reader.varint("image height", MAX_SIDE)
    width = reader.varint("image width", MAX_SIDE)
    if height == 0 or width == 0:
        raise ContainerError(f"corrupted header: image size {height}x{width}")
    length = reader.varint("payload length", 1 << 40)
    remaining = reader.end - reader.pos
    if length > remaining:
        raise ContainerError(
            f"truncated percept file: the header declares a {length}-byte payload but only "
            f"{max(remaining, 0)} bytes follow"
        )
    if length < remaining:
        raise ContainerError(
            f"corrupted percept file: {remaining - length} unexpected bytes after the payload"
        )
    return codec_id, params, height, width, bytes(reader.take(length, "payload"))


def unpack(data: bytes, known_codecs: set[str] | None = None) -> Record:
    """Parse and verify a percept file. `known_codecs` defaults to the codec registry's names."""
    data = bytes(data)
    _check_start(data)
    stored = int.from_bytes(data[-4:], "big") if len(data) >= 9 else None
    computed = zlib.crc32(data[:-4])
    try:
        codec_id, params, height, width, payload = _parse(data)
    except _Short as exc:
        raise ContainerError(f"truncated percept file: it {exc} ({len(data)} bytes)") from None
    except ContainerError as exc:
        if stored != computed and not str(exc).startswith("truncated"):
            raise ContainerError(
                f"{exc} (and the CRC32 does not match: truncated or corrupted)"
            ) from None
        raise
    if stored != computed:
        raise ContainerError(
            f"CRC32 mismatch: the file is corrupted (stored {stored:#010x}, computed {computed:#010x})"
        )
    if known_codecs is None:
        known_codecs = set(codec_names())
    if codec_id not in known_codecs:
        raise ContainerError(
            f"unknown codec {codec_id!r} in the file: this percept knows {', '.join(sorted(known_codecs))} "
            "(made by a newer percept or a plugin that is not installed?)"
        )
    return Record(codec_id, params, height, width, payload, FORMAT_VERSION, len(data), computed)


def codec_params(codec) -> dict:
    """The parameters a codec records in the file header (`codec.params` if it has them)."""
    params = getattr(codec, "params", None)
    params = dict(params() if callable(params) else params or {})
    params.setdefault("quality", codec.quality)
    return params


def encode_image(x: torch.Tensor, codec) -> bytes:
    """Encode a [1,3,H,W] image in [0,1] with `codec` and return the whole percept file."""
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected a [1,3,H,W] image, got shape {tuple(x.shape)}")
    height, width = int(x.shape[2]), int(x.shape[3])
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise CodecError(
            f"cannot encode a {width}x{height} image: a percept file holds sides of 1..{MAX_SIDE} px"
        )
    check_pixels(height, width)
    try:
        payload = codec.encode(x)
    except PerceptError:
        raise
    except MemoryError:
        raise CodecError(f"{codec.name} cannot encode this image: out of memory") from None
    except Exception as exc:  # a codec library's own limits, on the way in
        raise CodecError(
            f"{codec.name} cannot encode this image ({type(exc).__name__}: {one_line(exc)})"
        ) from None
    try:
        return pack(codec.name, codec_params(codec), height, width, payload)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"{codec.name}: cannot write the file header: {one_line(exc)}") from None


def decode_file(data: bytes, **options) -> tuple[torch.Tensor, Record]:
    """Decode a percept file: the codec and its parameters come from the header.

    `options` go to the codec factory (e.g. `weights=PATH` for a learned codec whose weights
    cannot be downloaded). A codec may check the header's parameters against what it was given
    (`check_params`), e.g. that the weights are the ones that encoded the file.
    """
    record = unpack(data)
    check_pixels(record.height, record.width, "the file's image")
    quality = record.params.get("quality")
    if isinstance(quality, bool) or not isinstance(quality, int):
        shown = repr(quality) if len(repr(quality)) <= 40 else repr(quality)[:37] + "..."
        raise ContainerError(f"corrupted header: quality {shown} is not an integer")
    # The header's parameters configure the decoder (e.g. a learned codec's metric); the
    # caller's options (e.g. weights=PATH) come on top.
    accepted = codec_options(record.codec)
    recorded = {k: v for k, v in record.params.items() if k in accepted and k != "quality"}
    codec = get_codec(record.codec, quality, **{**recorded, **options})
    check = getattr(codec, "check_params", None)
    try:
        if check is not None:
            check(record.params)
        # what the payload declares (its size, format, latent grid) is checked against the
        # header before any pixel is decoded: a small file cannot make a huge allocation
        check_payload = getattr(codec, "check_payload", None)
        if check_payload is not None:
            check_payload(record.payload, record.height, record.width)
        x = codec.decode(record.payload)
    except PerceptError:
        raise
    except MemoryError:
        raise CodecError(f"{record.codec} payload cannot be decoded: out of memory") from None
    except Exception as exc:  # the codec library's exceptions on bad bytes end here
        raise CodecError(
            f"{record.codec} payload cannot be decoded ({type(exc).__name__}: {one_line(exc)})"
        ) from None
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ContainerError(
            f"the payload decodes to a tensor of shape {tuple(x.shape)}, not one RGB image"
        )
    if tuple(x.shape[-2:]) != (record.height, record.width):
        raise ContainerError(
            f"the payload decodes to {x.shape[-2]}x{x.shape[-1]}, but the header says "
            f"{record.height}x{record.width}: the file is inconsistent"
        )
    return x, record


def decode_all(images: Mapping[str, torch.Tensor], codec, consistency: bool = False):
    """(names, originals, decoded, bpps, projections): every image through the codec's real bytes;
    with `consistency`, each file's JPEG consistency projection (else None per image)."""
    names = list(images)
    originals = [images[n] for n in names]
    decoded, bpps, projections = [], [], []
    for x in originals:
        x_hat, record = decode_file(encode_image(x, codec))
        decoded.append(x_hat)
        bpps.append(record.bpp)
        projections.append(projector_for(record.codec, record.payload) if consistency else None)
    return names, originals, decoded, bpps, projections
