"""Evaluation datasets by name, with the papers' crop protocol and checksummed downloads.

``load_dataset(name)`` returns a list of ``NamedImage(name, image)`` with ``image`` a [1,3,H,W]
float32 tensor in [0,1]; ``iter_dataset`` yields the same lazily (use it for large folders). Names:

- ``"kodak"``: the 24 Kodak images (768x512 or 512x768). From ``$PERCEPT_DATA/kodak`` when present,
  else from ``$PERCEPT_CACHE/kodak`` (default ``~/.cache/percept/kodak``), downloading missing files
  from r0k.us and checking each against the SHA-256 stored below.
- ``"imagenet-sample"`` / ``"imagenet-sample:train"`` / ``":val"`` / ``":all"``: the ImageNet sample under
  ``$PERCEPT_DATA`` with percept.hub.data's split (every 10th file is 'val'; the bare name means 'val',
  because evaluating on training images would flatter a model).
- ``"skimage"``: the colour photos bundled with scikit-image (works everywhere, no download).
- any folder path: its PNG/JPEG/WebP/BMP/TIFF files, sorted by name.

Crops (``crop=``): ``None`` keeps full images; ``"centerN"`` (e.g. ``"center256"``) scales the short
edge to N (Pillow bicubic, antialiased) and centre-crops NxN, the protocol of paper 1 (after Xu et
al. 2024); ``"cropN"`` centre-crops NxN without scaling (the image must be at least N on each side).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from percept.core.images import atomic_write_bytes, load_image, pil_to_tensor, tensor_to_pil
from percept.errors import PerceptError
from percept.hub.data import (
    KODAK_NAMES,
    SKIMAGE_PHOTOS,
    imagenet_sample_paths,
    kodak_dir,
    kodak_paths,
    skimage_photo,
)

KODAK_URL = "https://r0k.us/graphics/kodak/kodak/{name}"
# SHA-256 of the 24 PNGs as distributed (computed from the project's reference copy).
KODAK_SHA256 = {
    "kodim01.png": "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f",
    "kodim02.png": "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369",
    "kodim03.png": "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137",
    "kodim04.png": "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23",
    "kodim05.png": "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e",
    "kodim06.png": "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d",
    "kodim07.png": "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a",
    "kodim08.png": "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb",
    "kodim09.png": "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf",
    "kodim10.png": "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b",
    "kodim11.png": "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746",
    "kodim12.png": "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e",
    "kodim13.png": "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d",
    "kodim14.png": "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846",
    "kodim15.png": "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9",
    "kodim16.png": "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640",
    "kodim17.png": "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd",
    "kodim18.png": "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5",
    "kodim19.png": "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b",
    "kodim20.png": "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7",
    "kodim21.png": "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b",
    "kodim22.png": "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939",
    "kodim23.png": "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5",
    "kodim24.png": "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class NamedImage(NamedTuple):
    name: str  # file stem (or photo name): a stable key for per-image results
    image: torch.Tensor  # [1,3,H,W] float32 in [0,1]


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_kodak(folder: str | os.PathLike) -> list[str]:
    """Names of the Kodak files in ``folder`` that are missing or differ from the stored SHA-256."""
    folder = Path(folder)
    return [
        n
        for n in KODAK_NAMES
        if not (folder / n).is_file() or sha256(folder / n) != KODAK_SHA256[n]
    ]


def cache_dir() -> Path:
    return Path(os.environ.get("PERCEPT_CACHE", "~/.cache/percept")).expanduser()


def download_kodak(folder: str | os.PathLike | None = None, *, timeout: float = 20.0) -> Path:
    """Fetch missing Kodak files into ``folder`` (default: the percept cache), checking SHA-256."""
    folder = Path(folder) if folder is not None else cache_dir() / "kodak"
    folder.mkdir(parents=True, exist_ok=True)
    for name in KODAK_NAMES:
        target = folder / name
        if target.is_file() and sha256(target) == KODAK_SHA256[name]:
            continue
        url = KODAK_URL.format(name=name)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                data = resp.read()
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            raise PerceptError(
                f"cannot download Kodak ({url}: {exc}); put kodim01.png ... kodim24.png in "
                f"{folder} or set PERCEPT_DATA to a folder holding kodak/"
            ) from None
        if hashlib.sha256(data).hexdigest() != KODAK_SHA256[name]:
            raise PerceptError(
                f"{url} does not match its stored SHA-256: not written; check the source"
            )
        atomic_write_bytes(target, data)
    return folder


def _kodak_files() -> list[Path]:
    folder = kodak_dir()
    if folder is None:
        folder = download_kodak()
    missing = [n for n in KODAK_NAMES if not (folder / n).is_file()]
    if missing:
        raise PerceptError(f"Kodak folder {folder} lacks {', '.join(missing)}")
    return [folder / n for n in KODAK_NAMES]


def _files(name: str) -> list[Path] | None:
    """Files of a named or folder dataset; None for the in-memory 'skimage' set."""
    if name == "kodak":
        return _kodak_files()
    if name == "skimage":
        return None
    if name.startswith("imagenet-sample"):
        split = name.partition(":")[2] or "val"
        files = imagenet_sample_paths(split)
        if not files:
            raise PerceptError(
                "imagenet-sample not found: set PERCEPT_DATA to a folder holding imagenet-sample/"
            )
        return files
    folder = Path(name).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PerceptError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        return files
    raise PerceptError(
        f"unknown dataset {name!r}: use kodak, imagenet-sample[:train|val|all], skimage or a folder"
    )


def parse_crop(crop: str) -> tuple[str, int]:
    """("center" or "crop", N) of a crop protocol name, or PerceptError for an unknown one."""
    match = re.fullmatch(r"(center|crop)(\d+)", crop)
    if match is None:
        raise PerceptError(
            f"unknown crop {crop!r}: use None, 'centerN' (scale + crop) or 'cropN' (crop only)"
        )
    return match.group(1), int(match.group(2))


def apply_crop(image: torch.Tensor, crop: str | None) -> torch.Tensor:
    """Apply a crop protocol (see the module docstring) to a [1,3,H,W] image."""
    if crop is None:
        return image
    kind, n = parse_crop(crop)
    h, w = image.shape[-2:]
    if kind == "center":
        # Scale so that the short edge is exactly n, then take the central n x n square.
        scale = n / min(h, w)
        size = (max(n, round(w * scale)), max(n, round(h * scale)))
        image = pil_to_tensor(tensor_to_pil(image).resize(size, Image.BICUBIC))
        h, w = image.shape[-2:]
    elif min(h, w) < n:
        raise PerceptError(f"image of {w}x{h} is smaller than the {n}x{n} crop")
    top, left = (h - n) // 2, (w - n) // 2
    return image[..., top : top + n, left : left + n].contiguous()


def iter_dataset(
    name: str, *, crop: str | None = None, limit: int | None = None
) -> Iterator[NamedImage]:
    """Yield ``NamedImage``s of a dataset in a fixed order (see ``load_dataset``)."""
    files = _files(name)
    if files is None:
        for photo in SKIMAGE_PHOTOS[:limit]:
            yield NamedImage(photo, apply_crop(skimage_photo(photo), crop))
        return
    for path in files[:limit]:
        yield NamedImage(path.stem, apply_crop(load_image(path)[0], crop))


def load_dataset(
    name: str, *, crop: str | None = None, limit: int | None = None
) -> list[NamedImage]:
    """All images of a dataset as a list of ``NamedImage(name, [1,3,H,W] tensor)``; ``limit`` keeps the first N."""
    return list(iter_dataset(name, crop=crop, limit=limit))


def evaluation_images(images: int | Sequence[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Images for a chapter's sweep, by name, and a sentence saying where they came from.

    `images` is a count (the first N of Kodak, kodim01 onwards) or a list of Kodak names
    ("kodim23" or "kodim23.png"). Without Kodak (PERCEPT_DATA unset or without kodak/) the same
    number of scikit-image photos is used instead, and the sentence says so: numbers on them are not
    comparable with published Kodak tables.
    """
    if isinstance(images, int):
        if images < 1:
            raise PerceptError(f"images must be at least 1, got {images}")
        wanted, count = None, images
    else:
        wanted = [n.removesuffix(".png") for n in images]
        count = len(wanted)
    paths = {p.stem: p for p in kodak_paths()}
    if paths:
        names = wanted if wanted is not None else sorted(paths)[:count]
        absent = [n for n in names if n not in paths]
        if absent:
            raise PerceptError(f"not in {kodak_dir()}: {', '.join(absent)}")
        loaded = {n: load_image(paths[n])[0] for n in names}
        return loaded, f"Kodak images from {kodak_dir()}: {', '.join(loaded)}."
    if count > len(SKIMAGE_PHOTOS):
        raise PerceptError(
            f"Kodak not found and only {len(SKIMAGE_PHOTOS)} scikit-image photos exist: "
            "set PERCEPT_DATA to a folder with kodak/ or ask for fewer images"
        )
    loaded = {item.name: item.image for item in iter_dataset("skimage", limit=count)}
    return loaded, (
        "Kodak not found (set PERCEPT_DATA to a folder holding kodak/): using the scikit-image photos "
        f"{', '.join(loaded)} instead; these numbers are not comparable with published Kodak tables."
    )
