"""Training and validation crops of the imagenet-sample photos (never Kodak, which is for evaluation).

Training images are decoded once into memory as uint8 [3,H,W] tensors. A training crop covers
`crop * s` pixels of the photo with s drawn log-uniformly from `scale_range` and is resized to
`crop` pixels with an antialiasing filter: s > 1 shows the prior sharper, less JPEG-marked content
(the ImageNet files are JPEG-compressed, and a prior that learns their 8x8 artefacts would restore
them), s = 1 keeps native-resolution statistics. Random horizontal flips.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from percept.data import imagenet_sample_paths
from percept.errors import PerceptError


def load_split(split: str, limit: int | None = None, min_side: int = 64) -> list[Tensor]:
    """Decode the imagenet-sample `split` ('train' or 'val') as uint8 [3,H,W] tensors."""
    paths: list[Path] = imagenet_sample_paths(split)
    if not paths:
        raise PerceptError(
            "no imagenet-sample photos found: set PERCEPT_DATA to the folder that holds "
            "imagenet-sample/ (see the data README)"
        )
    if limit is not None:
        paths = paths[:limit]
    images = []
    for p in tqdm(paths, desc=f"decoding {split} photos", leave=False):
        with Image.open(p) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if min(arr.shape[:2]) >= min_side:
            images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
    return images


def random_crops(
    images: list[Tensor],
    batch: int,
    crop: int,
    scale_range: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """A batch of random crops in [-1, 1], float32 [B,3,crop,crop]. All randomness from `generator`."""
    out = torch.empty(batch, 3, crop, crop)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    for b in range(batch):
        img = images[int(torch.randint(len(images), (), generator=generator))]
        _, h, w = img.shape
        s = math.exp(lo + (hi - lo) * float(torch.rand((), generator=generator)))
        size = max(crop, min(round(crop * s), h, w))
        top = int(torch.randint(h - size + 1, (), generator=generator))
        left = int(torch.randint(w - size + 1, (), generator=generator))
        patch = img[:, top : top + size, left : left + size].float().unsqueeze(0)
        if size != crop:
            patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", antialias=True)
        if float(torch.rand((), generator=generator)) < 0.5:
            patch = patch.flip(-1)
        out[b] = patch[0]
    return (out / 127.5 - 1).clamp(-1, 1)


def center_crops(images: list[Tensor], crop: int) -> Tensor:
    """Fixed center crops in [-1, 1] (native resolution) for held-out validation."""
    crops = []
    for img in images:
        _, h, w = img.shape
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        patch = img[:, top : top + c, left : left + c].float()
        if c != crop:
            patch = F.interpolate(patch[None], size=(crop, crop), mode="bilinear", antialias=True)[
                0
            ]
        crops.append(patch)
    return torch.stack(crops) / 127.5 - 1
