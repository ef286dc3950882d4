"""Metrics with pretrained networks: LPIPS (AlexNet), FID and KID (InceptionV3 of pytorch-fid).

Weights are looked up, in order, at a path you pass, then in torch hub's cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``), then downloaded from their public URL with a short socket
timeout. When all fail, ``MetricUnavailable`` names the exact file and where to put it. Random
weights are never substituted: a number computed here is the published metric or nothing.

FID protocols (``protocol=``):
- ``"image"``: one feature vector per whole image; pytorch-fid resizes every input bilinearly to
  299x299 (as the TF reference did). Paper 1's protocol is this on 256x256 images made by scaling the
  short edge to 256 and centre-cropping (``percept.hub.datasets.load_dataset(..., crop="center256")``).
- ``"patch"``: FID/256 of HiFiC (Mentzer et al. 2020) as used by MS-ILLM (Muckley et al. 2023): each
  image is cut into a grid of non-overlapping 256x256 patches, then into a second grid shifted by 128
  pixels in both directions; every patch is one sample (resized to 299 by pytorch-fid). A 768x512
  Kodak image gives 6 + 2 = 8 patches, Kodak 192. Stable for few high-resolution images, where one
  vector per image would give fewer samples than the 2048 feature dimensions.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from percept.errors import MetricUnavailable
from percept.metrics.realism import feature_statistics, frechet_distance, kernel_distance


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    what: str


ALEXNET = WeightFile(
    "alexnet-owt-7be5be79.pth",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "torchvision's ImageNet AlexNet (the LPIPS backbone; LPIPS's own linear layers ship in the lpips wheel)",
)
FID_INCEPTION = WeightFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "pytorch-fid's port of the TensorFlow FID InceptionV3 (2015-12-05)",
)


def weights_path(
    spec: WeightFile,
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    timeout: float = 10.0,
) -> Path:
    """The local file for ``spec``: ``path`` if given, else the torch hub cache, else a download."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise MetricUnavailable(
                f"weight file {p} does not exist (expected {spec.filename}: {spec.what})"
            )
        return p
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / spec.filename
    if target.is_file():
        return target
    hint = f"download {spec.url} and save it as {target} (or pass its path); it is {spec.what}"
    if not download:
        raise MetricUnavailable(f"{spec.filename} is not cached: {hint}")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", dir=cache)
        try:
            with (
                urllib.request.urlopen(spec.url, timeout=timeout) as resp,
                os.fdopen(fd, "wb") as fh,
            ):
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        raise MetricUnavailable(f"cannot download {spec.filename} ({exc}): {hint}") from None
    return target


_CACHE: dict[tuple, torch.nn.Module] = {}


def lpips_network(
    weights: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> torch.nn.Module:
    """LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), in eval mode, cached per device."""
    path = weights_path(ALEXNET, weights, download=download)
    key = ("lpips", str(path), str(device))
    if key not in _CACHE:
        import lpips as lpips_pkg

        with warnings.catch_warnings():
            # lpips calls torchvision with the deprecated `pretrained=` argument (False here: the
            # backbone is loaded below from the checked file, never downloaded by torchvision).
            warnings.simplefilter("ignore", UserWarning)
            net = lpips_pkg.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        # lpips splits torchvision's alexnet.features into slices that keep the original indices.
        for piece in net.net.children():
            for index, layer in piece.named_children():
                own = layer.state_dict()
                if own:
                    layer.load_state_dict({k: state[f"features.{index}.{k}"] for k in own})
        _CACHE[key] = net.eval().requires_grad_(False).to(device)
    return _CACHE[key]


@torch.no_grad()
def lpips(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """LPIPS distance per image (AlexNet, v0.1), lower is better; inputs [B,3,H,W] in [0,1].

    A learned full-reference metric: distances between unit-normalised AlexNet activations, weighted
    by linear layers fitted to human 2AFC judgements. Closer to perceived similarity than PSNR or
    SSIM, but still per image: it rewards looking like *this* image, not realism (FID's job).
    Paper 2 reports it and LPIPS-BDRate (see ``percept.metrics.bjontegaard.bd_rate``).
    """
    net = lpips_network(weights, device=device)
    x = x.unsqueeze(0) if x.dim() == 3 else x
    y = y.unsqueeze(0) if y.dim() == 3 else y
    out = net(
        x.to(device).float(), y.to(device).float(), normalize=True
    )  # normalize: [0,1] -> [-1,1]
    return out.flatten().double().cpu()


def inception_network(
    weights: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning the 2048-d pool features, loaded from the checked file."""
    path = weights_path(FID_INCEPTION, weights, download=download)
    key = ("inception", str(path), str(device))
    if key not in _CACHE:
        state = torch.load(path, map_location="cpu", weights_only=True)
        _CACHE[key] = FIDInceptionPool(state).eval().to(device)
    return _CACHE[key]


class FIDInceptionPool(torch.nn.Module):
    """pytorch-fid's ``InceptionV3([3])`` (the 2048-d pool features), built from a given state dict.

    pytorch-fid's own constructor always fetches its weights by URL (``fid_inception_v3`` calls torch
    hub's ``load_state_dict_from_url``), so it cannot be handed the checked local file. This builds
    the same network from pytorch-fid's pieces, as ``fid_inception_v3`` does (torchvision's
    InceptionV3 with the FID variants of the Mixed blocks), loads ``state`` strictly, and groups the
    layers into the same four blocks; ``forward`` is ``InceptionV3.forward`` with pytorch-fid's
    defaults: bilinear resize to 299x299, scale [0,1] -> [-1,1], then the blocks. Returns a
    one-element list like pytorch-fid.
    """

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        from pytorch_fid import inception as fid

        net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = fid.FIDInceptionE_1(1280)
        net.Mixed_7c = fid.FIDInceptionE_2(2048)
        net.load_state_dict(state)
        pool = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        mixed_5_6 = ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e")
        self.blocks = torch.nn.ModuleList(
            [
                torch.nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, pool),
                torch.nn.Sequential(net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, pool),
                torch.nn.Sequential(*[getattr(net, f"Mixed_{m}") for m in mixed_5_6]),
                torch.nn.Sequential(
                    net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d((1, 1))
                ),
            ]
        )
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = torch.nn.functional.interpolate(
            x, size=(299, 299), mode="bilinear", align_corners=False
        )
        x = 2 * x - 1
        for block in self.blocks:
            x = block(x)
        return [x]


def fid256_patches(image: torch.Tensor, patch_size: int = 256) -> torch.Tensor:
    """HiFiC's FID/256 patches of one image: the 256-grid and the grid shifted by 128 -> [N,3,p,p]."""
    image = image.unsqueeze(0) if image.dim() == 3 else image
    out = []
    for offset in (0, patch_size // 2):
        crop = image[..., offset:, offset:]
        rows, cols = crop.shape[-2] // patch_size, crop.shape[-1] // patch_size
        for r in range(rows):
            for c in range(cols):
                out.append(
                    crop[
                        0,
                        :,
                        r * patch_size : (r + 1) * patch_size,
                        c * patch_size : (c + 1) * patch_size,
                    ]
                )
    if not out:
        raise ValueError(
            f"image {tuple(image.shape[-2:])} is smaller than one {patch_size}px patch"
        )
    return torch.stack(out)


@torch.no_grad()
def inception_features(
    images: Sequence[torch.Tensor],
    *,
    protocol: str = "image",
    network: Callable[[torch.Tensor], object] | None = None,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Feature vectors [N, D] for a list of images in [0,1] under ``protocol`` ("image" or "patch").

    ``network`` replaces pytorch-fid's InceptionV3 (tests use a tiny random network to check the
    plumbing; such numbers are not FID). Images are rounded to 8 bits first, like saved PNGs.
    """
    if protocol not in ("image", "patch"):
        raise ValueError(f"unknown FID protocol {protocol!r}: use 'image' or 'patch'")
    net = network if network is not None else inception_network(weights, device=device)
    samples: list[torch.Tensor] = []
    for img in images:
        img = img.unsqueeze(0) if img.dim() == 3 else img
        img = img.float().clamp(0, 1).mul(255).round().div(255)
        samples.extend(fid256_patches(img) if protocol == "patch" else img)
    # Group equal shapes so that batches are stackable (whole images may differ in size).
    feats: list[np.ndarray | None] = [None] * len(samples)
    by_shape: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        by_shape.setdefault(tuple(s.shape), []).append(i)
    batches = [
        idx[k : k + batch_size] for idx in by_shape.values() for k in range(0, len(idx), batch_size)
    ]
    for batch in tqdm(batches, desc=f"features ({protocol})", disable=not progress, leave=False):
        out = net(torch.stack([samples[i] for i in batch]).to(device))
        out = out[0] if isinstance(out, (list, tuple)) else out
        out = out.flatten(1).double().cpu().numpy()
        for i, row in zip(batch, out):
            feats[i] = row
    return np.stack(feats)


def fid_from_features(reference: np.ndarray, test: np.ndarray) -> float:
    """Frechet distance between Gaussian fits of two feature sets (lower is better)."""
    return frechet_distance(*feature_statistics(reference), *feature_statistics(test))


def fid(
    reference: Sequence[torch.Tensor],
    test: Sequence[torch.Tensor],
    *,
    protocol: str = "image",
    **kwargs,
) -> float:
    """FID (Heusel et al. 2017) between two image sets; keyword arguments go to ``inception_features``.

    Distribution-level: compares the set of reconstructions with the set of originals, so it measures
    realism (the "perception" of the perception-distortion trade-off), not fidelity. Biased upwards
    for small sets: compare values only at equal sample counts and protocol.
    """
    return fid_from_features(
        inception_features(reference, protocol=protocol, **kwargs),
        inception_features(test, protocol=protocol, **kwargs),
    )


def kid(
    reference: Sequence[torch.Tensor],
    test: Sequence[torch.Tensor],
    *,
    protocol: str = "image",
    subsets: int = 100,
    subset_size: int = 1000,
    **kwargs,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) on Inception features: (mean, std over subsets); unbiased, lower is better."""
    a = inception_features(reference, protocol=protocol, **kwargs)
    b = inception_features(test, protocol=protocol, **kwargs)
    return kernel_distance(a, b, subsets=subsets, subset_size=subset_size)
