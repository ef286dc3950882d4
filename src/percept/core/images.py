"""Reading and writing images: explicit mode conversion, tensors in [0,1], atomic writes."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from percept.errors import PerceptError


def pil_to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow image to 8-bit RGB, returning notes that say what was converted."""
    notes: list[str] = []
    mode = img.mode
    if mode == "RGB":
        return img, notes
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"converted {mode} (16-bit grayscale) to 8-bit RGB")
        return Image.fromarray(arr8, "L").convert("RGB"), notes
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append(f"dropped the alpha channel of a {mode} image (composited on white)")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), notes
    if mode == "P":
        notes.append("converted a palette (P) image to RGB")
    elif mode in ("L", "1"):
        notes.append(f"converted a grayscale ({mode}) image to RGB")
    else:
        notes.append(f"converted a {mode} image to RGB")
    return img.convert("RGB"), notes


def load_image(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """Read an image file as a [1,3,H,W] float tensor in [0,1] plus notes on any conversion."""
    path = Path(path)
    if not path.is_file():
        raise PerceptError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            rgb, notes = pil_to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PerceptError(f"cannot read image {path}: {exc}") from None
    return pil_to_tensor(rgb), notes


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB Pillow image -> [1,3,H,W] float32 in [0,1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """[1,3,H,W] or [3,H,W] tensor in [0,1] -> HxWx3 uint8 (round to nearest)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray(tensor_to_uint8(x), "RGB")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round a [0,1] tensor to the 8-bit grid, as a decoder that writes a PNG would."""
    return x.clamp(0, 1).mul(255).round().div(255)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so that the target is either the old file or the complete new one, never half."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise PerceptError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_png(x: torch.Tensor | Image.Image, path: str | os.PathLike) -> None:
    """Save a tensor in [0,1] (or a Pillow image) as PNG, atomically."""

    img = x if isinstance(x, Image.Image) else tensor_to_pil(x)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
