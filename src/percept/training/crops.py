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
`percept train pack-photos` carries the whole photos instead, downscaled (see `pack_photos`).
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

from percept.errors import PerceptError
from percept.hub.data import imagenet_sample_paths

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


def pack_photos(
    out: Path | str, *, short_side: int = 224, quality: int = 90, limit: int | None = None
) -> dict:
    """Write every imagenet-sample photo, downscaled so its short side is `short_side` (Lanczos;
    never upscaled), as a JPEG (4:4:4) of the same file name to `out`/imagenet-sample/, so that
    `PERCEPT_DATA=out` trains on it unchanged (same names, so the same train/val split).

    This is the other way to carry the data to a lent GPU: the whole photos, not one crop each,
    small enough to travel (pack.json records the folder's size). Downscaling also averages away
    most of the originals' JPEG artefacts; a model trained on it has seen photos below their native
    scale. `limit`: the first N files of the folder.
    Returns the metadata also written to `out`/pack.json, with the folder's size in MiB."""

    if short_side < 64 or not 1 <= quality <= 100:
        raise PerceptError("pack-photos: --short-side must be >= 64 and --quality in 1..100")
    paths = imagenet_sample_paths("all")
    if not paths:
        raise PerceptError(
            "no imagenet-sample photos found: set PERCEPT_DATA to the folder that holds "
            "imagenet-sample/ (see the data README)"
        )
    paths = paths[:limit] if limit is not None else paths
    out = Path(out)
    folder = out / "imagenet-sample"
    folder.mkdir(parents=True, exist_ok=True)
    total, downscaled = 0, 0
    for p in tqdm(paths, desc="pack-photos", leave=False):
        with Image.open(p) as img:
            rgb = img.convert("RGB")
        w, h = rgb.size
        scale = short_side / min(w, h)
        if scale < 1:
            rgb = rgb.resize((round(w * scale), round(h * scale)), Image.LANCZOS)
            downscaled += 1
        target = folder / p.name
        rgb.save(target, "JPEG", quality=quality, subsampling=0)
        total += target.stat().st_size
    meta = {
        "source": "imagenet-sample (all files; every 10th held out as val by name order)",
        "short_side": short_side, "quality": quality, "chroma": "4:4:4", "filter": "Lanczos",
        "photos": len(paths), "downscaled": downscaled, "mib": round(total / 2**20, 3),
    }  # fmt: skip
    (out / "pack.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _carry_options(p: argparse.ArgumentParser, limit_what: str, result: str) -> None:
    """--out, --limit and --max-mib: what both ways of carrying the data take."""
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--limit", type=int, default=None, help=f"only the first N {limit_what}")
    p.add_argument(
        "--max-mib",
        type=float,
        default=60.0,
        help=f"fail when the {result} is larger (carry limits)",
    )


def photos_main(argv: list[str]) -> int:
    """`percept train pack-photos --out DIR`: the photos, downscaled, as a folder that travels."""
    p = argparse.ArgumentParser(
        prog="percept train pack-photos",
        description="Downscale every imagenet-sample photo (short side --short-side, JPEG 4:4:4) "
        "into DIR/imagenet-sample/; train anywhere with PERCEPT_DATA=DIR.",
    )
    _carry_options(p, "files", "folder")
    p.add_argument("--short-side", type=int, default=224, help="short side after downscaling")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the copies")
    args = p.parse_args(argv[2:])
    meta = pack_photos(args.out, short_side=args.short_side, quality=args.quality, limit=args.limit)
    print(json.dumps(meta))
    if meta["mib"] > args.max_mib:
        raise PerceptError(
            f"the photos take {meta['mib']} MiB in {args.out}, over --max-mib {args.max_mib}: use a "
            "smaller --short-side or --quality"
        )
    return 0


def main(argv: list[str]) -> int:
    """`percept train pack --out FILE`: the training crops as one file that travels."""
    p = argparse.ArgumentParser(
        prog="percept train pack",
        description="Pack native-resolution training and held-out crops into one .npz; train "
        "anywhere with PERCEPT_CROPS=FILE.",
    )
    _carry_options(p, "photos of each split", "file")
    p.add_argument("--size", type=int, default=128, help="side of the training crops")
    p.add_argument("--per-image", type=int, default=1, help="training crops per photo")
    p.add_argument("--val-size", type=int, default=128, help="side of the held-out center crops")
    p.add_argument("--seed", type=int, default=0)
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
    generator: torch.Generator,
    scale_range: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """A batch of random crops, float32 [B,3,crop,crop] in [0, 1], every kind of run's training data.

    Each crop takes a photo, a scale drawn log-uniformly from `scale_range` (a window of crop * s
    pixels, resized to crop; (1, 1) keeps native resolution), a position and a horizontal flip,
    all from `generator` in that order, so a run's data depends only on its seed and its photos.
    Networks that work in [-1, 1] map the batch with `x * 2 - 1`."""
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
    return (out / 255.0).clamp(0, 1)


def center_crops(images: list[Tensor], crop: int) -> Tensor:
    """Fixed center crops [N,3,crop,crop] in [0, 1] at native resolution (a photo smaller than
    the crop is resized up): every kind of run's held-out set."""
    crops = []
    for img in images:
        _, h, w = img.shape
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        patch = img[:, top : top + c, left : left + c].float()
        if c != crop:
            patch = F.interpolate(patch[None], size=(crop, crop), mode="bilinear", antialias=True)[0]
        crops.append(patch)
    return (torch.stack(crops) / 255.0).clamp(0, 1)
