"""Reading and writing images: explicit mode conversion, tensors in [0,1], atomic writes.

Pixel cap: no image above `max_pixels()` pixels is read, encoded or decoded (default
`DEFAULT_MAX_PIXELS`, 64 megapixels, about 8K x 8K; set `PERCEPT_MAX_PIXELS` to change it). The
cap is checked from the size a file declares, before its pixels are decoded, so a small file that
declares a huge image (a decompression bomb) is refused with one line instead of exhausting memory.
Written files get the permissions the umask gives a new file (0644 under umask 022), as `open()`
would, even though they are written through a private temporary file.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from percept.errors import PerceptError

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
MAX_PIXELS_ENV = "PERCEPT_MAX_PIXELS"
MAX_NAME_BYTES = 255  # the longest file name Linux file systems take


def max_pixels() -> int:
    """The cap on pixels per image: PERCEPT_MAX_PIXELS when set (a positive integer), else 64 MP."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise PerceptError(f"{MAX_PIXELS_ENV} must be a positive integer, got {text[:40]!r}")
    return value


def check_pixels(height: int, width: int, what: str = "the image") -> None:
    """Refuse an image above the pixel cap (see the module docstring), before it is allocated."""
    cap = max_pixels()
    if height * width > cap:
        raise PerceptError(
            f"{what} is {width}x{height} = {height * width} pixels, above the cap of {cap} "
            f"(set {MAX_PIXELS_ENV} to allow larger images)"
        )


def describe_path(path: Path) -> str | None:
    """Why `path` cannot be read as an input file (no such file, a directory, a FIFO, a device),
    or None when it is a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a parent is not a directory)"
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a regular file"
    return "it is not a regular file"


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
    problem = describe_path(path)
    if problem:
        raise PerceptError(f"cannot read image {path}: {problem}")
    try:
        with Image.open(path) as img:
            width, height = img.size  # read from the header; no pixel is decoded yet
            check_pixels(height, width, f"image {path}")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            notes: list[str] = []
            oriented = img
            orientation = _orientation(img)
            if orientation > 1:  # a camera's rotation flag: encode the image as it is shown
                oriented = ImageOps.exif_transpose(img)
                notes.append(f"applied the EXIF orientation (tag value {orientation})")
            rgb, more = pil_to_rgb(oriented)
            notes += more
    except PerceptError:
        raise
    except UnidentifiedImageError:
        raise PerceptError(f"cannot read image {path}: not an image format Pillow reads") from None
    except Image.DecompressionBombError as exc:
        raise PerceptError(f"cannot read image {path}: {one_line(exc)}") from None
    except MemoryError:
        raise PerceptError(f"cannot read image {path}: out of memory") from None
    except Exception as exc:  # a corrupt file can make any decoder raise anything
        raise PerceptError(f"cannot read image {path}: {one_line(exc)}") from None
    return pil_to_tensor(rgb), notes


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        return value if isinstance(value, int) else 1
    except Exception:
        return 1


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its first line (or its type), cut at `limit` characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def new_file_mode() -> int:
    """The mode `open()` gives a new file under this process's umask (0644 under umask 022)."""
    umask = None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if umask is None:  # no /proc: read it by setting it (and put it back at once)
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def check_output_path(path: str | os.PathLike) -> Path:
    """Refuse, with one line, an output path that cannot be written as a file: an empty name, a
    trailing slash, an existing directory, a name too long, a missing or unwritable folder."""
    text = os.fspath(path)
    if not text:
        raise PerceptError("the output path is empty")
    if text.endswith(os.sep) or text.endswith("/."):
        raise PerceptError(f"cannot write {text}: it names a directory, not a file")
    path = Path(text)
    if len(path.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise PerceptError(
            f"cannot write {str(path)[:60]}...: the file name is longer than {MAX_NAME_BYTES} bytes"
        )
    if len(text) > 4000:
        raise PerceptError(f"cannot write {text[:60]}...: the path is too long")
    if path.is_dir():
        raise PerceptError(f"cannot write {path}: it is a directory")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise PerceptError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PerceptError(f"cannot write {path}: no permission to write in {directory}")
    if path.exists() and not path.is_file():
        raise PerceptError(f"cannot write {path}: {describe_path(path) or 'not a regular file'}")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes so that the target is either the old file or the complete new one, never half.

    The new file gets the umask's permissions (`new_file_mode`), not the temporary file's 0600."""
    path = check_output_path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise PerceptError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), new_file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ENOSPC:
                reason = "no space left on the device"
            raise PerceptError(f"cannot write {path}: {reason}") from None
        raise


def save_png(x: torch.Tensor | Image.Image, path: str | os.PathLike) -> None:
    """Save a tensor in [0,1] (or a Pillow image) as PNG, atomically."""

    img = x if isinstance(x, Image.Image) else tensor_to_pil(x)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
