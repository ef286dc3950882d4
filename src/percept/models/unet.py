"""A fully convolutional multi-scale UNet for the project's diffusion prior.

The layout follows the DDPM++ family used by EDM (Karras et al. 2022, NVlabs/edm
`training/networks.py`), cut down for CPU training: residual blocks with GroupNorm and SiLU, the
noise level enters every block through FiLM (a per-channel scale and shift, Perez et al. 2018),
residual sums are scaled by 1/sqrt(2) as in EDM, and the last convolution of every block is
zero-initialised so that the untrained network starts as the identity of its skip paths.

Cost per 3x3 convolution is the same at every level when the channel count doubles as the
resolution halves, while parameters grow 4x per level, so extra capacity is cheapest at the coarse
levels; `blocks` is therefore given per level. Attention is optional and only at the coarsest level.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of `UNet`; plain values so that it round-trips through JSON."""

    in_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 128)  # per resolution level, finest first
    blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per level on the encoder side
    mid_blocks: int = 2
    emb_dim: int = 128
    groups: int = 8  # GroupNorm groups (each level's channel count must be divisible by it)
    attention: bool = False  # one self-attention layer in the bottleneck
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if len(self.channels) != len(self.blocks) or not self.channels:
            raise ValueError("UNetConfig: `channels` and `blocks` need one entry per level")
        if any(c % self.groups for c in self.channels):
            raise ValueError(
                f"UNetConfig: every channel count must be divisible by groups={self.groups}"
            )

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (`UNet.forward` pads to it)."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"], d["blocks"] = list(self.channels), list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"UNetConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


def noise_features(c_noise: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of the scalar noise input (transformer positional embedding, as DDPM++).

    c_noise = ln(sigma)/4 is O(1), so the frequencies span 1..1000 rather than 1/10000..1.
    """
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=c_noise.device))
    angles = c_noise.float()[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM from the noise embedding between the two convs."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), scale + 1)
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) * math.sqrt(0.5)


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions of the coarsest feature map."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return (x + self.proj(a.transpose(-1, -2).reshape(b, c, h, w))) * math.sqrt(0.5)


class UNet(nn.Module):
    """F(x, c_noise): the raw network inside a preconditioning wrapper (see `percept.models.edm`).

    Any height and width: the input is reflect-padded to a multiple of `config.multiple` and the
    output cropped back, so that a crop-trained model runs on whole images.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.emb = nn.Sequential(
            nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim)
        )
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.channels[0], 3, padding=1)
        block = lambda i, o: ResBlock(i, o, cfg.emb_dim, cfg.groups, cfg.dropout)  # noqa: E731
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = cfg.channels[0]
        for level, (ch, nb) in enumerate(zip(cfg.channels, cfg.blocks)):
            self.down.append(nn.ModuleList([block(cin if i == 0 else ch, ch) for i in range(nb)]))
            cin = ch
            if level < len(cfg.channels) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([block(cin, cin) for _ in range(cfg.mid_blocks)])
        self.attn = SelfAttention(cin, cfg.groups) if cfg.attention else None
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(cfg.channels))):
            ch = cfg.channels[level]
            # One block merges the encoder skip of this level (UNet concatenation), one refines.
            self.up.append(nn.ModuleList([block(cin + ch, ch), block(ch, ch)]))
            cin = ch
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, cfg.channels[level - 1], 3, padding=1))
                cin = cfg.channels[level - 1]
        self.norm_out = nn.GroupNorm(cfg.groups, cfg.channels[0])
        self.conv_out = nn.Conv2d(cfg.channels[0], cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.config.multiple)
        emb = self.emb(noise_features(c_noise.reshape(-1).expand(x.shape[0]), self.config.emb_dim))
        h = self.conv_in(x)
        skips = []
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        for blk in self.mid:
            h = blk(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        for i, blocks in enumerate(self.up):
            h = blocks[0](torch.cat([h, skips.pop()], dim=1), emb)
            h = blocks[1](h, emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h0, :w0]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to the next multiple; reflect where the image is big enough, else replicate.

    Reflection keeps image statistics at the border (no flat or black margin for the prior to see);
    replicate is only reached for inputs smaller than the padding, which reflection cannot serve.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
