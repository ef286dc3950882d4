"""Where images come from: PERCEPT_DATA (../shared/data on CI), else packaged photos.

Kept small here; the metrics issue extends it with downloads (checksummed) and crop protocols.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from percept.images import load_image, pil_to_tensor

KODAK_NAMES = [f"kodim{i:02d}.png" for i in range(1, 25)]
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


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
    """One of scikit-image's bundled photos as [1,3,H,W] in [0,1]."""
    from PIL import Image
    from skimage import data as skdata

    if name not in SKIMAGE_PHOTOS:
        raise ValueError(
            f"unknown scikit-image photo {name!r}: choose from {', '.join(SKIMAGE_PHOTOS)}"
        )
    arr = getattr(skdata, name)()
    img = Image.fromarray(arr)
    return pil_to_tensor(img.convert("RGB"))


def demo_photo() -> tuple[torch.Tensor, str]:
    """A real photo for the demo: kodim23 when Kodak is available, else scikit-image's astronaut."""
    paths = kodak_paths()
    for p in paths:
        if p.name == "kodim23.png":
            return load_image(p)[0], str(p)
    if paths:
        return load_image(paths[0])[0], str(paths[0])
    return skimage_photo("astronaut"), "scikit-image: astronaut"
