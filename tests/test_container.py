"""The percept container: layout, bpp over the whole file, and every kind of bad input."""

from __future__ import annotations

import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from percept.codecs import get_codec
from percept.codecs.container import (
    FORMAT_VERSION,
    MAGIC,
    Record,
    bpp,
    decode_file,
    encode_image,
    pack,
    unpack,
)
from percept.errors import ContainerError

KNOWN = {"jpeg", "webp"}


def _valid() -> bytes:
    return pack("jpeg", {"quality": 50, "subsampling": "4:2:0"}, 5, 7, bytes(range(40)))


def test_round_trip_fields_and_bpp():
    data = _valid()
    rec = unpack(data, KNOWN)
    assert isinstance(rec, Record)
    assert (rec.codec, rec.height, rec.width) == ("jpeg", 5, 7)
    assert rec.params == {"quality": 50, "subsampling": "4:2:0"}
    assert rec.payload == bytes(range(40))
    assert rec.file_bytes == len(data)
    assert rec.crc32 == zlib.crc32(data[:-4])
    assert data[:4] == MAGIC and data[4] == FORMAT_VERSION
    # bpp counts the whole file, header and checksum included, not only the payload.
    assert rec.bpp == bpp(data, 5, 7) == 8 * len(data) / 35
    assert rec.header_bytes == len(data) - 40 > 0
    assert bpp(100, 10, 10) == 8.0


def test_encode_decode_file_uses_header_codec(photo):
    x = photo[..., :48, :80]
    data = encode_image(x, get_codec("webp", 40))
    y, rec = decode_file(data)
    assert rec.codec == "webp" and rec.params["quality"] == 40 and rec.params["method"] == 4
    assert y.shape == x.shape
    assert torch.equal(y, get_codec("webp", 40).decode(rec.payload))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"PR", "truncated"),
        (MAGIC, "truncated"),
        (b"GIF89a" + bytes(30), "not a percept file"),
        (
            MAGIC + bytes([3]) + bytes(20),
            "made by format version 3; this percept reads version 1: upgrade percept",
        ),
        (MAGIC + bytes([0]) + bytes(20), "format version 0"),
    ],
)
def test_bad_starts(data, message):
    with pytest.raises(ContainerError, match=message):
        unpack(data, KNOWN)


def test_every_truncation_is_a_container_error():
    data = _valid()
    for n in range(len(data)):
        with pytest.raises(ContainerError):
            unpack(data[:n], KNOWN)
    with pytest.raises(ContainerError, match="truncated"):
        unpack(data[:-10], KNOWN)


def test_crc_mismatch_and_trailing_bytes():
    data = bytearray(_valid())
    data[-10] ^= 0x01  # a payload byte
    with pytest.raises(ContainerError, match="CRC32 mismatch"):
        unpack(bytes(data), KNOWN)
    good = _valid()
    extra = good[:-4] + b"xx"
    extra += zlib.crc32(extra).to_bytes(4, "big")
    with pytest.raises(ContainerError, match="unexpected bytes after the payload"):
        unpack(extra, KNOWN)


def test_unknown_codec_and_absurd_lengths():
    with pytest.raises(ContainerError, match="unknown codec 'nosuch'"):
        unpack(pack("nosuch", {}, 4, 4, b"abc"), KNOWN)
    # The registry is the default list of known codecs.
    with pytest.raises(ContainerError, match="unknown codec"):
        unpack(pack("nosuch", {}, 4, 4, b"abc"))
    head = MAGIC + bytes([1, 4]) + b"jpeg" + b"\x02{}" + b"\x04\x04" + b"\xff" * 9 + b"\x01"
    with pytest.raises(ContainerError):
        unpack(head + zlib.crc32(head).to_bytes(4, "big"), KNOWN)
    huge_side = MAGIC + bytes([1, 4]) + b"jpeg" + b"\x02{}" + b"\xff\xff\x7f\x04\x00"
    with pytest.raises(ContainerError, match="image height"):
        unpack(huge_side + zlib.crc32(huge_side).to_bytes(4, "big"), KNOWN)


def test_pack_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pack("Bad Name", {}, 4, 4, b"")
    with pytest.raises(ValueError):
        pack("jpeg", {}, 0, 4, b"")
    with pytest.raises(ValueError):
        pack("jpeg", {"x": float("nan")}, 4, 4, b"")


def _only_container_errors(data: bytes) -> None:
    try:
        unpack(data, KNOWN)
    except ContainerError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _only_container_errors(data)
    _only_container_errors(MAGIC + bytes([1]) + data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutations_and_truncations(draw):
    data = bytearray(_valid())
    index = draw.draw(st.integers(0, len(data) - 1))
    value = draw.draw(st.integers(0, 255))
    original = data[index]
    data[index] = value
    if value == original:
        assert unpack(bytes(data), KNOWN).payload == bytes(range(40))
    else:
        with pytest.raises(ContainerError):
            unpack(bytes(data), KNOWN)
    cut = draw.draw(st.integers(0, len(data)))
    _only_container_errors(bytes(data[:cut]))
