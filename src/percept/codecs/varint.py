"""LEB128-style unsigned varints: the length fields of the container and of codec payloads."""

from __future__ import annotations


def encode_varint(value: int) -> bytes:
    """7 bits per byte, least significant first; the high bit says another byte follows."""
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
