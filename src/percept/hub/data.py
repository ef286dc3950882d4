"""Where images come from: PERCEPT_DATA (../shared/data on CI), else packaged photos.

Kept small here; the metrics issue extends it with downloads (checksummed) and crop protocols.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from percept.core.images import load_image, pil_to_tensor
from percept.errors import PerceptError

KODAK_NAMES = [f"kodim{i:02d}.png" for i in range(1, 25)]
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# scikit-image's bundled images that are NOT natural photos like the prior's training data: scanned
# text, astronomy, microscopy, synthetic graphics. The failure-cases chapter feeds them to the enhancer.
SKIMAGE_OUT_OF_DOMAIN = (
    "text",
    "page",
    "hubble_deep_field",
    "immunohistochemistry",
    "colorwheel",
    "checkerboard",
)


def data_root() -> Path | None:
    """The folder named by PERCEPT_DATA, or None when unset or missing."""
    value = os.environ.get("PERCEPT_DATA")
    if not value:
        return None
    root = Path(value).expanduser()
    return root if root.is_dir() else None


def kodak_dir() -> Path | None:
    root = data_root()
    if root is None:
        return None
    folder = root / "kodak"
    return folder if (folder / "kodim01.png").is_file() else None


def kodak_paths() -> list[Path]:
    folder = kodak_dir()
    if folder is None:
        return []
    return [folder / n for n in KODAK_NAMES if (folder / n).is_file()]


def imagenet_sample_paths(split: str = "train") -> list[Path]:
    """ImageNet sample files, sorted; every 10th file (index % 10 == 0) is the held-out 'val' split."""
    root = data_root()
    if root is None or not (root / "imagenet-sample").is_dir():
        return []
    files = sorted(
        p
        for p in (root / "imagenet-sample").iterdir()
        if p.suffix.lower() in (".jpeg", ".jpg", ".png")
    )
    if split == "all":
        return files
    if split == "val":
        return files[::10]
    if split == "train":
        return [p for i, p in enumerate(files) if i % 10 != 0]
    raise ValueError(f"unknown split {split!r}: use 'train', 'val' or 'all'")


def skimage_photo(name: str) -> torch.Tensor:
    """One of scikit-image's bundled images (SKIMAGE_PHOTOS or SKIMAGE_OUT_OF_DOMAIN) as [1,3,H,W]
    in [0,1]; grey images are repeated over the three channels."""
    from skimage import data as skdata

    if name not in SKIMAGE_PHOTOS + SKIMAGE_OUT_OF_DOMAIN:
        raise ValueError(
            f"unknown scikit-image image {name!r}: choose from "
            f"{', '.join(SKIMAGE_PHOTOS + SKIMAGE_OUT_OF_DOMAIN)}"
        )
    arr = getattr(skdata, name)()
    img = Image.fromarray(arr)
    return pil_to_tensor(img.convert("RGB"))


def named_image(name: str) -> torch.Tensor:
    """A Kodak image by name ("kodim15", needs PERCEPT_DATA) or a scikit-image image, [1,3,H,W]."""

    if name.startswith("kodim"):
        by_name = {p.stem: p for p in kodak_paths()}
        if name.removesuffix(".png") not in by_name:
            raise PerceptError(f"{name} not found: set PERCEPT_DATA to a folder holding kodak/")
        return load_image(by_name[name.removesuffix(".png")])[0]
    try:
        return skimage_photo(name)
    except ValueError as exc:
        raise PerceptError(str(exc)) from None


def demo_photo() -> tuple[torch.Tensor, str]:
    """A real photo for the demo: kodim23 when Kodak is available, else scikit-image's astronaut."""
    paths = kodak_paths()
    for p in paths:
        if p.name == "kodim23.png":
            return load_image(p)[0], str(p)
    if paths:
        return load_image(paths[0])[0], str(paths[0])
    return skimage_photo("astronaut"), "scikit-image: astronaut"
