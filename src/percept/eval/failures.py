"""Failure cases of the enhancer, image by image: each image's outputs kept for viewing, and their
distortion.

The sweeps (`percept.eval.sweeps`) summarise sets: realism (SWD) needs many images, so they keep
numbers, not pictures. A failure case is read on single images: the enhancer turns text strokes,
stars or a house's layout into photo texture, which no per-image number shows and a set's SWD
averages away. `enhanced_panels` therefore codes each image once (real bytes), enhances the decode
at every sigma asked for, and returns the images themselves beside a table of their PSNR and MSE
ratio to the plain decode (the distortion side of the paper's rule). The failure-case chapter of
the book is built on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from percept.codecs.container import decode_file, encode_image
from percept.core.images import quantize
from percept.enhancer.pipeline import enhance
from percept.hub.data import SKIMAGE_OUT_OF_DOMAIN, named_image
from percept.hub.datasets import apply_crop
from percept.metrics import mse, psnr

ORIGINAL = "original"


@dataclass(frozen=True)
class Panels:
    """What `enhanced_panels` made.

    `outputs`: image name -> {label: [1,3,H,W] in [0,1]}, in order: "original", the decode, then one
    entry per sigma label. `table`: one row per (image, output) except the original, with `image`,
    `domain` ("photo", or "out of domain" for scikit-image's non-photos), `output` (the label),
    `bpp` (the whole file), `psnr` and `mse_ratio` (MSE over the plain decode's MSE: 1 for the
    decode itself).
    """

    outputs: dict[str, dict[str, torch.Tensor]]
    table: pd.DataFrame

    def titles(self, name: str, labels: Sequence[str] | None = None) -> dict[str, str]:
        """Panel titles for one image: "name: label", with the output's PSNR on a second line
        (the original has none). `labels` defaults to every output of the image."""
        psnrs = self.table[self.table["image"] == name].set_index("output")["psnr"]
        return {
            label: f"{name}: {label}" + (f"\n{psnrs[label]:.2f} dB" if label in psnrs else "")
            for label in (self.outputs[name] if labels is None else labels)
        }


def named_crops(names: Sequence[str], crop: str | None) -> dict[str, torch.Tensor]:
    """Images by name (Kodak's "kodimNN" or one of scikit-image's, `percept.hub.data.named_image`),
    each cropped by `crop` (`percept.hub.datasets.apply_crop`, e.g. "center256")."""
    return {name: apply_crop(named_image(name), crop) for name in names}


def enhanced_panels(
    images: Mapping[str, torch.Tensor],
    codec,
    denoiser,
    sigmas: Mapping[str, float],
    *,
    preset: str = "medium",
    seed: int = 0,
    decode_label: str | None = None,
    progress: bool = False,
) -> Panels:
    """Every image through `codec` (encoded to real bytes, decoded) and enhanced at each sigma.

    `sigmas` maps an output's label to its sigma (the labels name the outputs and the table's
    `output` column). `decode_label` defaults to "<codec name> q<quality>". Every output of an
    image is enhanced with a generator seeded with `seed`, so for one image the outputs share their
    noise and differ only by sigma (and an image's outputs do not depend on the other images).
    Outputs are rounded to 8 bits, as a saved PNG would be.
    """
    decode_label = decode_label or f"{codec.name} q{codec.quality}"
    if decode_label == ORIGINAL or ORIGINAL in sigmas or decode_label in sigmas:
        raise ValueError(f"output labels must differ from each other and from {ORIGINAL!r}")
    outputs, rows = {}, []
    for name, x in tqdm(images.items(), desc="failure cases", disable=not progress):
        x_hat, record = decode_file(encode_image(x, codec))
        made = {ORIGINAL: x, decode_label: x_hat}
        for label, sigma in sigmas.items():
            gen = torch.Generator().manual_seed(seed)
            made[label] = quantize(enhance(x_hat, denoiser, float(sigma), preset, generator=gen))
        decode_mse = float(mse(x, x_hat))
        domain = "out of domain" if name in SKIMAGE_OUT_OF_DOMAIN else "photo"
        for label, y in list(made.items())[1:]:
            rows.append({"image": name, "domain": domain, "output": label, "bpp": record.bpp,
                         "psnr": float(psnr(x, y)), "mse_ratio": float(mse(x, y)) / decode_mse})  # fmt: skip
        outputs[name] = made
    return Panels(outputs=outputs, table=pd.DataFrame(rows))
