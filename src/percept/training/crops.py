"""Training and validation crops of the imagenet-sample photos (never Kodak, which is for evaluation).

Training images are decoded once into memory as uint8 [3,H,W] tensors. A training crop covers
`crop * s` pixels of the photo with s drawn log-uniformly from `scale_range` and is resized to
`crop` pixels with an antialiasing filter: s > 1 shows the prior sharper, less JPEG-marked content
(the ImageNet files are JPEG-compressed, and a prior that learns their 8x8 artefacts would restore
them), s = 1 keeps native-resolution statistics. Random horizontal flips.

For a machine without the photos (a lent GPU gets only what is carried to it), `percept train pack`
writes native-resolution crops of both splits into one compressed array file; with the environment
variable PERCEPT_CROPS naming that file, `load_split` serves the packed crops instead of the photos
and training runs unchanged (fewer regions per photo: `--per-image` sets how many).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from percept.data import imagenet_sample_paths
from percept.errors import PerceptError

PACK_ENV = "PERCEPT_CROPS"


def load_split(split: str, limit: int | None = None, min_side: int = 64) -> list[Tensor]:
    """The imagenet-sample `split` ('train' or 'val') as uint8 [3,H,W] tensors: the decoded photos,
    or the packed crops of the file named by PERCEPT_CROPS (see `pack_crops`)."""
    packed = os.environ.get(PACK_ENV)
    if packed:
        return _load_packed(Path(packed), split, limit, min_side)
    return _load_photos(split, limit, min_side)


def _load_photos(split: str, limit: int | None, min_side: int) -> list[Tensor]:
    return [img for _, img in _indexed_photos(split, limit, min_side)]


def _indexed_photos(split: str, limit: int | None, min_side: int) -> list[tuple[int, Tensor]]:
    """(position in the split, image) of the first `limit` photos, those with a side >= min_side."""
    paths: list[Path] = imagenet_sample_paths(split)
    if not paths:
        raise PerceptError(
            "no imagenet-sample photos found: set PERCEPT_DATA to the folder that holds "
            "imagenet-sample/ (see the data README), or PERCEPT_CROPS to a packed crop file"
        )
    if limit is not None:
        paths = paths[:limit]
    images = []
    for i, p in enumerate(tqdm(paths, desc=f"decoding {split} photos", leave=False)):
        with Image.open(p) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if min(arr.shape[:2]) >= min_side:
            images.append((i, torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()))
    return images


def _load_packed(path: Path, split: str, limit: int | None, min_side: int) -> list[Tensor]:
    if not path.is_file():
        raise PerceptError(f"{PACK_ENV}={path}: no such file (make one with percept train pack)")
    with np.load(path) as pack:
        if split not in pack.files:
            raise PerceptError(f"{path} has no {split!r} crops (it holds {', '.join(pack.files)})")
        arr = pack[split]
        index_key = f"{split}_photo"
        if limit is not None and index_key in pack.files:
            # `limit` means what it means for the photos: crops of the first `limit` photos
            arr = arr[pack[index_key] < limit]
        else:
            arr = arr[:limit]
    if arr.shape[-1] < min_side:
        raise PerceptError(
            f"{path}: the packed {split} crops are {arr.shape[-1]} px, this run needs {min_side}: "
            f"pack again with a larger {'--size' if split == 'train' else '--val-size'}"
        )
    return [torch.from_numpy(a.copy()) for a in arr]


def pack_crops(
    out: Path | str,
    *,
    size: int = 128,
    per_image: int = 1,
    val_size: int = 128,
    seed: int = 0,
    limit: int | None = None,
) -> dict:
    """Write `per_image` random size x size crops of every training photo and the val_size center
    crop of every held-out photo (native resolution, uint8 [N,3,S,S]) to one compressed .npz.

    The val crops equal what `center_crops(load_split("val"), val_size)` takes from the photos, so
    held-out figures stay comparable; each crop's position in its split is stored too, so a run's
    `limit` picks the crops of the same first photos as it would from the photos. Photos smaller
    than a crop are left out. Returns the metadata that is also stored in the file (key `meta`,
    JSON), with the file's size in MiB."""
    if size < 8 or val_size < 8 or per_image < 1:
        raise PerceptError("pack: --size and --val-size must be >= 8 and --per-image >= 1")
    g = torch.Generator().manual_seed(seed)
    train, train_photo = [], []
    for i, img in _indexed_photos("train", limit, size):
        _, h, w = img.shape
        for _ in range(per_image):
            top = int(torch.randint(h - size + 1, (), generator=g))
            left = int(torch.randint(w - size + 1, (), generator=g))
            train.append(img[:, top : top + size, left : left + size])
            train_photo.append(i)
    val, val_photo = [], []
    for i, img in _indexed_photos("val", limit, val_size):
        _, h, w = img.shape
        top, left = (h - val_size) // 2, (w - val_size) // 2
        val.append(img[:, top : top + val_size, left : left + val_size])
        val_photo.append(i)
    if not train or not val:
        raise PerceptError("pack: no photo is as large as the crops asked for")
    meta = {
        "source": "imagenet-sample (every 10th file held out as val)", "seed": seed,
        "size": size, "per_image": per_image, "val_size": val_size,
        "train_crops": len(train), "val_crops": len(val),
    }  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp, train=torch.stack(train).numpy(), val=torch.stack(val).numpy(),
        train_photo=np.array(train_photo, dtype=np.int32), val_photo=np.array(val_photo, dtype=np.int32),
        meta=np.array(json.dumps(meta)),
    )  # fmt: skip
    tmp.replace(out)
    meta["mib"] = round(out.stat().st_size / 2**20, 1)
    return meta


def main(argv: list[str]) -> int:
    """`percept train pack --out FILE`: the training crops as one file that travels."""
    p = argparse.ArgumentParser(
        prog="percept train pack",
        description="Pack native-resolution training and held-out crops into one .npz; train "
        "anywhere with PERCEPT_CROPS=FILE.",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", type=int, default=128, help="side of the training crops")
    p.add_argument("--per-image", type=int, default=1, help="training crops per photo")
    p.add_argument("--val-size", type=int, default=128, help="side of the held-out center crops")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N photos of each split")
    p.add_argument(
        "--max-mib", type=float, default=60.0, help="fail when the file is larger (carry limits)"
    )
    args = p.parse_args(argv[2:])
    meta = pack_crops(
        args.out, size=args.size, per_image=args.per_image, val_size=args.val_size,
        seed=args.seed, limit=args.limit,
    )  # fmt: skip
    print(json.dumps(meta))
    if meta["mib"] > args.max_mib:
        args.out.unlink()
        raise PerceptError(
            f"the pack is {meta['mib']} MiB, over --max-mib {args.max_mib}: removed; use a "
            "smaller --size or --per-image"
        )
    return 0


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
