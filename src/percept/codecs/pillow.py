"""JPEG, WebP, AVIF and JPEG 2000 through Pillow. The payload is the codec's real file.

Quality knobs:
- jpeg 1..100 (libjpeg quality), Huffman tables optimised; webp 1..100 (libwebp quality, method 4,
  cwebp's default effort); avif 1..100 (libavif quality, speed 6, one thread so bitstreams do not
  depend on the machine's core count).
- jpeg2000 1..800: the target rate of the codestream in hundredths of a bit per pixel (OpenJPEG's
  "rates" mode, compression ratio 24 / (Q / 100)), so Q=25 aims at 0.25 bpp before the percept
  header. Irreversible 9/7 wavelet (lossy), raw J2K codestream (no JP2 boxes).

Chroma: each codec's default, because that is what these codecs are benchmarked as: 4:2:0 for
JPEG, AVIF (and always for lossy WebP); JPEG 2000 codes full-resolution chroma after its colour
transform. JPEG and AVIF take `subsampling="4:4:4"`. The choice is recorded in the file's parameters.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError, features

from percept.codecs.jpeg_consistency import projector_for
from percept.codecs.registry import CodecInfo, register_codec
from percept.core.images import check_pixels, one_line, pil_to_tensor, tensor_to_pil
from percept.errors import CodecError, PerceptError

_SUBSAMPLING_JPEG = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
# The largest side each library codes (libjpeg 65500, libwebp 16383, AVIF through libavif/aom 65536,
# OpenJPEG none below the container's 65535); a larger image is refused before the encoder runs.
MAX_SIDES = {"jpeg": 65500, "webp": 16383}


def _int_option(name: str, option: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise CodecError(f"{name}: {option} must be an integer in {lo}..{hi}, got {shown}")
    return value


class PillowCodec:
    """A Pillow image format as a Codec: `save_kwargs` are passed to `Image.save`."""

    def __init__(self, name: str, quality: int, fmt: str, save_kwargs: dict, params: dict):
        self.name, self.quality, self.format = name, quality, fmt
        self.save_kwargs = save_kwargs
        self.params = {"quality": quality, **params}

    def encode(self, x: torch.Tensor) -> bytes:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        top = MAX_SIDES.get(self.name)
        if top is not None and max(height, width) > top:
            raise CodecError(
                f"{self.name} cannot code a {width}x{height} image: its sides are at most {top} px"
            )
        buf = io.BytesIO()
        try:
            tensor_to_pil(x).save(buf, format=self.format, **self.save_kwargs)
        except MemoryError:
            raise CodecError(f"{self.name} cannot encode this image: out of memory") from None
        except Exception as exc:  # the library's own limits and option checks
            raise CodecError(f"{self.name} cannot encode this image: {one_line(exc)}") from None
        return buf.getvalue()

    def _open(self, data: bytes) -> Image.Image:
        """The payload opened lazily (header only), as this codec's format and nothing else."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                return Image.open(io.BytesIO(data), formats=[self.format])
            except UnidentifiedImageError:
                raise CodecError(
                    f"the payload is not a {self.name} bitstream ({self.format} cannot read it)"
                ) from None
            except Image.DecompressionBombError:
                raise CodecError(
                    f"the {self.name} payload declares an image beyond Pillow's bomb limit"
                ) from None

    def check_payload(self, data: bytes, height: int, width: int) -> None:
        """Refuse a payload whose own header disagrees with the file header (size, format)."""
        try:
            with self._open(data) as img:
                self._check_declared(img, height, width)
        except CodecError:
            raise
        except Exception as exc:  # a header the library cannot parse
            raise CodecError(f"{self.name} payload cannot be decoded: {one_line(exc)}") from None

    def _check_declared(self, img: Image.Image, height: int | None, width: int | None) -> None:
        if img.format != self.format:
            raise CodecError(f"the payload is {img.format}, not {self.name}")
        w, h = img.size
        if height is not None and (h, w) != (height, width):
            raise CodecError(
                f"the {self.name} payload declares a {w}x{h} image, but the header says "
                f"{width}x{height}: the file is inconsistent"
            )
        if w <= 0 or h <= 0:
            raise CodecError(f"the {self.name} payload declares an empty {w}x{h} image")
        check_pixels(h, w, f"the {self.name} payload's image")

    def decode(self, data: bytes) -> torch.Tensor:
        try:
            with self._open(data) as img:
                self._check_declared(img, None, None)
                img.load()
                return pil_to_tensor(img.convert("RGB"))
        except PerceptError:
            raise
        except MemoryError:
            raise CodecError(f"{self.name} payload cannot be decoded: out of memory") from None
        except Exception as exc:  # OSError, SyntaxError, RuntimeError (AVIF), ... on bad bytes
            raise CodecError(f"{self.name} payload cannot be decoded: {one_line(exc)}") from None


class PillowJpegCodec(PillowCodec):
    """JPEG: a Pillow codec whose files also declare their quantisation cells."""

    def projector(self, payload: bytes):
        """The projection onto the images this file's quantisation cells allow."""
        return projector_for(self.name, payload)


def _check_subsampling(name: str, subsampling: str, allowed) -> str:
    if not isinstance(subsampling, str) or subsampling not in allowed:
        raise CodecError(
            f"{name}: subsampling must be one of {', '.join(allowed)}, got {str(subsampling)[:40]!r}"
        )
    return subsampling


def jpeg(quality: int, subsampling: str = "4:2:0") -> PillowCodec:
    _check_subsampling("jpeg", subsampling, _SUBSAMPLING_JPEG)
    kwargs = {"quality": quality, "subsampling": _SUBSAMPLING_JPEG[subsampling], "optimize": True}
    params = {"subsampling": subsampling, "optimize": True, "libjpeg": features.version("jpg")}
    return PillowJpegCodec("jpeg", quality, "JPEG", kwargs, params)


def webp(quality: int, method: int = 4) -> PillowCodec:
    _int_option("webp", "method", method, 0, 6)
    kwargs = {"quality": quality, "method": method}
    params = {"method": method, "subsampling": "4:2:0", "libwebp": features.version("webp")}
    return PillowCodec("webp", quality, "WEBP", kwargs, params)


def avif(quality: int, subsampling: str = "4:2:0", speed: int = 6) -> PillowCodec:
    _check_subsampling("avif", subsampling, ("4:2:0", "4:2:2", "4:4:4"))
    _int_option("avif", "speed", speed, 0, 10)
    kwargs = {"quality": quality, "subsampling": subsampling, "speed": speed, "max_threads": 1}
    params = {"subsampling": subsampling, "speed": speed, "libavif": features.version("avif")}
    return PillowCodec("avif", quality, "AVIF", kwargs, params)


def jpeg2000(quality: int) -> PillowCodec:
    ratio = 24.0 / (quality / 100.0)
    kwargs = {
        "quality_mode": "rates",
        "quality_layers": [ratio],
        "irreversible": True,
        "no_jp2": True,
        # the irreversible colour transform (RGB -> YCbCr) decorrelates the channels; without it
        # OpenJPEG codes R, G and B independently and spends its rate three times on what they share
        "mct": 1,
    }
    params = {
        "target_bpp": quality / 100.0,
        "wavelet": "9/7",
        "colour_transform": "ict",
        "openjpeg": features.version("jpg_2000"),
    }
    return PillowCodec("jpeg2000", quality, "JPEG2000", kwargs, params)


def _info(
    name: str, feature: str, lo: int, hi: int, default: int, meaning: str, desc: str
) -> Callable[[], CodecInfo]:
    def info() -> CodecInfo:
        ok = bool(features.check(feature))
        reason = (
            ""
            if ok
            else f"this Pillow was built without {feature} support (install a Pillow wheel with it)"
        )
        return CodecInfo(name, "pillow", lo, hi, default, meaning, desc, ok, reason)

    return info


def register() -> None:
    """Add these codecs to the registry (called by percept.codecs.registry)."""
    register_codec(
        "jpeg",
        jpeg,
        _info("jpeg", "jpg", 1, 100, 75, "libjpeg quality", "JPEG (libjpeg via Pillow), 4:2:0"),
    )
    register_codec(
        "webp",
        webp,
        _info("webp", "webp", 1, 100, 75, "libwebp quality", "WebP lossy (libwebp via Pillow)"),
    )
    register_codec(
        "avif",
        avif,
        _info(
            "avif", "avif", 1, 100, 60, "libavif quality", "AVIF (libavif/aom via Pillow), 4:2:0"
        ),
    )
    register_codec(
        "jpeg2000",
        jpeg2000,
        _info(
            "jpeg2000",
            "jpg_2000",
            1,
            800,
            50,
            "target codestream bpp x 100",
            "JPEG 2000 (OpenJPEG via Pillow), 9/7 wavelet",
        ),
    )
