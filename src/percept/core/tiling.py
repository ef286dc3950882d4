"""Run a fixed-size denoiser on any image size: overlapping tiles blended with smooth weights.

Fully convolutional priors (the project's UNets) run on the whole image after `pad_to_multiple`.
Denoisers with a fixed input size (a Gaussian mixture of dimension C*t*t, a 256x256 diffusers
model) are wrapped in `TiledDenoiser`: every call of D(x, sigma) cuts x into t x t tiles that
overlap by `overlap` pixels, denoises all tiles as one batch, and blends them back with weights
that ramp linearly across the overlaps (a partition of unity after normalisation), so seams do not
show. Because it wraps D, it works with every sampler unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad the bottom and right of x to a multiple of `multiple`; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (h, w)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    stride = tile - overlap
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _ramp(tile: int, overlap: int) -> Tensor:
    w = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        edge = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        w[:overlap] = edge
        w[-overlap:] = torch.minimum(w[-overlap:], edge.flip(0))
    return w


class TiledDenoiser(nn.Module):
    """`TiledDenoiser(denoiser, tile, overlap)(x, sigma)`: D applied tile by tile and blended.

    Images smaller than a tile are replicate-padded up to it. `max_batch` bounds how many tiles go
    through the wrapped denoiser at once.
    """

    def __init__(self, denoiser, tile: int, overlap: int = 0, max_batch: int = 64) -> None:
        super().__init__()
        if not 0 <= overlap < tile:
            raise ValueError(f"need 0 <= overlap < tile, got overlap {overlap}, tile {tile}")
        self.denoiser, self.tile, self.overlap, self.max_batch = (
            denoiser,
            int(tile),
            int(overlap),
            max_batch,
        )
        self.sigma_min = getattr(denoiser, "sigma_min", 0.0)

    def forward(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        b, c, h, w = x.shape
        t = self.tile
        xp = (
            F.pad(x, (0, max(t - w, 0), 0, max(t - h, 0)), mode="replicate")
            if h < t or w < t
            else x
        )
        hp, wp = xp.shape[-2:]
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        ys, xs = _starts(hp, t, self.overlap), _starts(wp, t, self.overlap)
        boxes = [(i, j) for i in ys for j in xs]
        tiles = torch.stack([xp[:, :, i : i + t, j : j + t] for i, j in boxes], 1).reshape(
            -1, c, t, t
        )
        sig_t = sig.repeat_interleave(len(boxes))
        out = torch.cat(
            [
                self.denoiser(tiles[k : k + self.max_batch], sig_t[k : k + self.max_batch])
                for k in range(0, tiles.shape[0], self.max_batch)
            ]
        ).reshape(b, len(boxes), c, t, t)
        ramp = _ramp(t, self.overlap)
        weight = (ramp[:, None] * ramp[None, :]).to(device=x.device, dtype=out.dtype)
        acc = torch.zeros((b, c, hp, wp), dtype=out.dtype, device=x.device)
        norm = torch.zeros((hp, wp), dtype=out.dtype, device=x.device)
        for n, (i, j) in enumerate(boxes):
            acc[:, :, i : i + t, j : j + t] += weight * out[:, n]
            norm[i : i + t, j : j + t] += weight
        return (acc / norm)[:, :, :h, :w].to(x.dtype)
