"""Codecs that run encoder/decoder binaries found on PATH (in the spirit of CompressAI's
utils/bench/codecs.py): JPEG XL (cjxl/djxl), HEIC (heif-enc, heif-dec or heif-convert) and VVC
(VTM's EncoderApp/DecoderApp). Each call works in its own temporary directory; the tool versions go
into the file's parameters.

Quality knobs: jpegxl 1..100 (cjxl -q, mapped by libjxl to a butteraugli distance; effort 7),
heic 1..100 (heif-enc -q, x265, 4:2:0 unless `chroma="444"`), vtm 0..63 is the QP (lower is better;
YCbCr BT.709 full range, 4:4:4, 8 bits, intra configuration file from `config=` or
PERCEPT_VTM_CONFIG).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from percept.codecs.registry import CodecInfo, register_codec
from percept.codecs.varint import encode_varint as _varint
from percept.core.images import pil_to_tensor, tensor_to_pil, tensor_to_uint8
from percept.errors import CodecError

TIMEOUT_S = 600


def run_tool(cmd: list[str]) -> str:
    """Run a binary; a failure becomes a CodecError carrying the tool's last line of output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CodecError(f"{Path(cmd[0]).name} could not run: {exc}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        raise CodecError(f"{Path(cmd[0]).name} failed with status {proc.returncode}: {lines[-1]}")
    return proc.stdout + proc.stderr


@functools.cache
def tool_version(binary: str, *args: str, pattern: str = r"v?\d+\.\d+(\.\d+)?") -> str:
    """The first version-looking token the tool prints for `args` ('unknown' if none)."""
    try:
        proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(0) if match else "unknown"


def _read_size(data: bytes) -> tuple[int, int, int]:
    values, pos = [], 0
    for _ in range(2):
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 28:
                raise CodecError("vtm payload is truncated")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    return values[0], values[1], pos


class FileToolCodec:
    """Encoder and decoder commands that read and write image files."""

    suffix = ".bin"

    def __init__(self, name: str, quality: int, params: dict):
        self.name, self.quality = name, quality
        self.params = {"quality": quality, **params}

    def encode_cmd(self, src: str, dst: str) -> list[str]:
        raise NotImplementedError

    def decode_cmd(self, src: str, dst: str) -> list[str]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> bytes:
        with tempfile.TemporaryDirectory(prefix="percept-") as tmp:
            src, dst = os.path.join(tmp, "in.png"), os.path.join(tmp, "out" + self.suffix)
            tensor_to_pil(x).save(src)
            run_tool(self.encode_cmd(src, dst))
            return Path(dst).read_bytes()

    def decode(self, data: bytes) -> torch.Tensor:
        with tempfile.TemporaryDirectory(prefix="percept-") as tmp:
            src, dst = os.path.join(tmp, "in" + self.suffix), os.path.join(tmp, "out.png")
            Path(src).write_bytes(data)
            run_tool(self.decode_cmd(src, dst))
            with Image.open(dst) as img:
                img.load()
                return pil_to_tensor(img.convert("RGB"))


class JpegXL(FileToolCodec):
    suffix = ".jxl"

    def __init__(self, quality: int, effort: int = 7):
        if not 1 <= effort <= 9:
            raise CodecError(f"jpegxl: effort must be 1..9, got {effort}")
        self.effort = effort
        super().__init__(
            "jpegxl", quality, {"effort": effort, "cjxl": tool_version("cjxl", "--version")}
        )

    def encode_cmd(self, src, dst):
        return ["cjxl", src, dst, "-q", str(self.quality), "-e", str(self.effort)]

    def decode_cmd(self, src, dst):
        return ["djxl", src, dst]


def _heif_decoder() -> str | None:
    return shutil.which("heif-dec") or shutil.which("heif-convert")


class Heic(FileToolCodec):
    suffix = ".heic"

    def __init__(self, quality: int, chroma: str = "420"):
        if chroma not in ("420", "422", "444"):
            raise CodecError(f"heic: chroma must be 420, 422 or 444, got {chroma!r}")
        self.chroma = chroma
        version = tool_version("heif-enc", "--help", pattern=r"\d+\.\d+\.\d+")
        super().__init__("heic", quality, {"chroma": chroma, "encoder": "x265", "libheif": version})

    def encode_cmd(self, src, dst):
        return ["heif-enc", "-q", str(self.quality), "-p", f"chroma={self.chroma}", "-o", dst, src]

    def decode_cmd(self, src, dst):
        return [_heif_decoder() or "heif-dec", src, dst]


# BT.709 full-range RGB <-> YCbCr, as VTM's 4:4:4 input expects (CompressAI's bench does the same).
_KR, _KB = 0.2126, 0.0722


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = _KR * r + (1 - _KR - _KB) * g + _KB * b
    return np.stack([y, 0.5 + (b - y) / (2 * (1 - _KB)), 0.5 + (r - y) / (2 * (1 - _KR))], -1)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 0.5, ycc[..., 2] - 0.5
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / (1 - _KR - _KB)
    return np.stack([r, g, b], -1)


class Vtm:
    """VVC intra coding with the VTM reference software; the payload is size varints + bitstream."""

    def __init__(self, quality: int, config: str | None = None):
        config = config or os.environ.get("PERCEPT_VTM_CONFIG")
        if not config or not Path(config).is_file():
            raise CodecError(
                "vtm needs an encoder configuration: pass config=PATH (e.g. VTM's "
                "cfg/encoder_intra_vtm.cfg) or set PERCEPT_VTM_CONFIG"
            )
        self.name, self.quality, self.config = "vtm", quality, config
        version = tool_version("EncoderApp", "--help", pattern=r"VTM[^\n]*?\d+\.\d+")
        self.params = {
            "quality": quality,
            "config_name": Path(config).name,
            "vtm": version,
            "yuv": "709-444-8",
        }

    def encode(self, x: torch.Tensor) -> bytes:
        rgb = tensor_to_uint8(x).astype(np.float64) / 255.0
        height, width = rgb.shape[:2]
        ycc = np.clip(np.round(rgb_to_ycbcr(rgb) * 255.0), 0, 255).astype(np.uint8)
        with tempfile.TemporaryDirectory(prefix="percept-") as tmp:
            yuv, out = os.path.join(tmp, "in.yuv"), os.path.join(tmp, "out.bin")
            Path(yuv).write_bytes(ycc.transpose(2, 0, 1).tobytes())
            run_tool(
                [
                    "EncoderApp",
                    "-c",
                    self.config,
                    "-i",
                    yuv,
                    "-b",
                    out,
                    "-o",
                    os.devnull,
                    "-wdt",
                    str(width),
                    "-hgt",
                    str(height),
                    "-fr",
                    "1",
                    "-f",
                    "1",
                    "-q",
                    str(self.quality),
                    "--InputChromaFormat=444",
                    "--InputBitDepth=8",
                    "--OutputBitDepth=8",
                    "--ConformanceWindowMode=1",
                ]
            )
            return _varint(height) + _varint(width) + Path(out).read_bytes()

    def decode(self, data: bytes) -> torch.Tensor:
        height, width, pos = _read_size(data)
        with tempfile.TemporaryDirectory(prefix="percept-") as tmp:
            src, rec = os.path.join(tmp, "in.bin"), os.path.join(tmp, "rec.yuv")
            Path(src).write_bytes(data[pos:])
            run_tool(["DecoderApp", "-b", src, "-o", rec, "-d", "8"])
            raw = np.fromfile(rec, dtype=np.uint8)
        if raw.size != 3 * height * width:
            raise CodecError(f"DecoderApp wrote {raw.size} samples, expected {3 * height * width}")
        ycc = raw.reshape(3, height, width).transpose(1, 2, 0).astype(np.float64) / 255.0
        rgb = np.clip(ycbcr_to_rgb(ycc), 0, 1)
        return (
            torch.from_numpy(rgb.astype(np.float32))
            .permute(2, 0, 1)
            .unsqueeze(0)
            .mul(255)
            .round()
            .div(255)
        )


def _tool_info(name, binaries, lo, hi, default, meaning, desc, package):
    def info() -> CodecInfo:
        missing = [
            b for b in binaries if not (shutil.which(b) if isinstance(b, str) else _heif_decoder())
        ]
        names = [b if isinstance(b, str) else "heif-dec/heif-convert" for b in missing]
        reason = f"{', '.join(names)} not found on PATH ({package})" if missing else ""
        return CodecInfo(name, "external", lo, hi, default, meaning, desc, not missing, reason)

    return info


def register() -> None:
    """Add these codecs to the registry (called by percept.codecs.registry)."""
    register_codec(
        "jpegxl",
        JpegXL,
        _tool_info(
            "jpegxl",
            ["cjxl", "djxl"],
            1,
            100,
            75,
            "cjxl -q quality",
            "JPEG XL (libjxl cjxl/djxl)",
            "apt-get install libjxl-tools",
        ),
    )
    register_codec(
        "heic",
        Heic,
        _tool_info(
            "heic",
            ["heif-enc", None],
            1,
            100,
            50,
            "heif-enc -q quality",
            "HEIC/HEVC intra (libheif + x265)",
            "apt-get install libheif-examples",
        ),
    )
    register_codec(
        "vtm",
        Vtm,
        _tool_info(
            "vtm",
            ["EncoderApp", "DecoderApp"],
            0,
            63,
            37,
            "QP, lower is better",
            "VVC intra (VTM reference software)",
            "build VTM and put its bin/ on PATH",
        ),
    )
