"""Stage (b) of paper 2: an auxiliary encoder g'_a for a frozen codec, and the losses that train it.

g'_a has g_a's architecture and starts from g_a's weights, so at step 0 it reproduces the base codec
exactly. Everything else stays frozen: g_s, the hyperprior (h_a, h_s) and the entropy models. Its
latents are quantized as the base codec quantizes y, around the hyperprior's means of the *base*
latents (what a decoder knows), with a straight-through gradient. The decode g_s(Q(g'_a(x))) is then
pushed toward realism by a conditional patch discriminator trained from scratch (HiFiC, Mentzer et
al. 2020: conditioned on the decoded latent, upsampled in) and a patch sliced-Wasserstein term, while
MSE and the base entropy model's rate keep it near the codec's operating point. No loss needs
downloaded weights.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from percept.fusion.latents import DecodedLatents, from_image, synthesize


def make_aux_encoder(model: nn.Module) -> nn.Module:
    """A trainable copy of the codec's g_a (same architecture, initialised from its weights)."""
    aux = copy.deepcopy(model.g_a)
    for p in aux.parameters():
        p.requires_grad_(True)
    return aux


def freeze(model: nn.Module) -> nn.Module:
    """The base codec, frozen and in eval mode (its quantizers then round instead of adding noise)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def ste_round(y: Tensor, means: Tensor) -> Tensor:
    """round(y - means) + means in the forward pass, identity gradient (straight-through)."""
    return y + (torch.round(y - means) + means - y).detach()


def latent_bpp(model: nn.Module, y_hat: Tensor, latents: DecodedLatents, pixels: int) -> Tensor:
    """Bits per pixel the base entropy model would spend on y_hat (a rate term; z is unchanged)."""
    _, likelihoods = model.gaussian_conditional(y_hat, latents.scales, means=latents.means)
    return -torch.log2(likelihoods).sum() / pixels


def aux_decode(model: nn.Module, aux: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Base latents and the auxiliary path's latents and image for a batch x in [0,1]."""
    with torch.no_grad():
        _, latents = from_image(model, x)
    y_aux_hat = ste_round(aux(x), latents.means)
    x_aux = model.g_s(y_aux_hat)  # unclamped for the gradient; clamp where images are measured
    return {"latents": latents, "y_aux_hat": y_aux_hat, "x_aux": x_aux}


class PatchDiscriminator(nn.Module):
    """Conditional patch discriminator: 4x4 strided convolutions with spectral norm (HiFiC style).

    The decoded latent is mapped by a 1x1 convolution to a few channels and upsampled (nearest) to
    the image size, so the discriminator judges an image given what the decoder knew: it can only
    reward detail that is plausible for that latent, not detail that contradicts it.
    """

    def __init__(self, latent_channels: int, width: int = 64, cond_channels: int = 12):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.cond = nn.Conv2d(latent_channels, cond_channels, 1)
        chans = [3 + cond_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers.append(sn(nn.Conv2d(chans[-1], 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, y_hat: Tensor) -> Tensor:
        cond = F.interpolate(self.cond(y_hat), size=image.shape[-2:], mode="nearest")
        return self.net(torch.cat([image * 2 - 1, cond], dim=1))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the discriminator (softplus form)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the auxiliary encoder."""
    return F.softplus(-fake_logits).mean()


def patch_swd_loss(
    fake: Tensor,
    real: Tensor,
    *,
    patch: int = 7,
    patches: int = 256,
    directions: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced Wasserstein-2 distance between random patch sets of two image batches (differentiable).

    Patches of both sets are taken at the same random places, normalised with the real set's mean
    and standard deviation (so blur is penalised, not hidden), projected on random unit directions,
    sorted and compared: the squared distance of the sorted projections.
    """
    n, c, h, w = real.shape
    gen = generator
    ys = torch.randint(h - patch + 1, (patches,), generator=gen)
    xs = torch.randint(w - patch + 1, (patches,), generator=gen)
    bs = torch.randint(n, (patches,), generator=gen)

    def take(img: Tensor) -> Tensor:
        rows = [img[b, :, y : y + patch, x : x + patch].reshape(-1) for b, y, x in zip(bs, ys, xs)]
        return torch.stack(rows)

    a, b = take(fake), take(real)
    mean, std = b.mean(0, keepdim=True), b.std(0, keepdim=True) + 1e-3
    a, b = (a - mean) / std, (b - mean) / std
    dirs = torch.randn(a.shape[1], directions, generator=gen).to(a)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return ((pa - pb) ** 2).mean()


def psnr(x: Tensor, ref: Tensor) -> float:
    """PSNR in dB of 8-bit-rounded x against ref (both [0,1])."""
    mse = torch.mean((x.clamp(0, 1).mul(255).round().div(255) - ref) ** 2).item()
    return -10 * math.log10(max(mse, 1e-12))


@torch.no_grad()
def aux_images(model: nn.Module, aux: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(base decode, auxiliary decode) of x in [0,1], both clamped as a decoder would."""
    _, latents = from_image(model, x)
    y_aux_hat = torch.round(aux(x) - latents.means) + latents.means
    return synthesize(model, latents.y_hat), synthesize(model, y_aux_hat)
