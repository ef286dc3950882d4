"""`percept demo`: what percept is for, on one real photo, in one picture.

The photo (Kodak's kodim23 when PERCEPT_DATA holds kodak/, else scikit-image's astronaut) is coded
at a low rate with the project's learned codec and with JPEG (real bitstreams), then decoded
plainly and through the enhancer (paper 1's fast preset: one step of the consistency model
`percept-cm-s` at the sigma calibrated to double the MSE, from the shipped calibration table). The
picture has one column per output, the original first; its top row shows whole images, its bottom
row the same crop of each at 1:1 pixels. Each panel gives bpp (whole file), PSNR, and realism: the
sliced Wasserstein distance between the Laplacian-pyramid patches of the output and of the
original (`percept.metrics.swd`, x1e3, lower = more real; the original's own figure is the noise
floor of the estimate, fresh patches of itself), the realism measure of every table in the book.

Methods are data: `METHODS` maps a name to a function of the coded image. Another decoder joins the
picture by adding itself there and to `DEFAULT_METHODS`. Paper 2's latent fusion (`percept.fusion`)
does: the learned codec's file decoded through the module shipped for its rate at tau = 1; it
returns None for JPEG, which has no latents to fuse.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from percept.cli.codec import _parser
from percept.codecs import get_codec
from percept.codecs.container import decode_file, encode_image
from percept.core.images import atomic_write_bytes, quantize, tensor_to_pil
from percept.enhancer.pipeline import Enhancer
from percept.errors import PerceptError
from percept.fusion.decode import FUSION_MODULES, decode_file_fused, fusion_name_for
from percept.fusion.module import load_fusion
from percept.hub.data import demo_photo
from percept.metrics import psnr, swd

CONSISTENCY_MODEL = "percept-cm-s"
# The learned codec's lowest rate and the JPEG quality nearest its rate on kodim23 (the demo prints
# both rates); both have calibrated sigmas for the fast preset in the shipped table.
DEFAULT_CODECS = (("percept-hyperprior", 1), ("jpeg", 5))
DEFAULT_METHODS = ("decode", "enhance:fast", "fusion")
FUSION_TAU = 1.0
PANEL = 256  # width of a panel and side of the 1:1 crop, in pixels


@dataclass(frozen=True)
class Coded:
    """One encode of the photo: what a decoding method receives."""

    codec: str
    quality: int
    data: bytes  # the whole percept file
    record: object  # percept.codecs.container's parsed header (codec, params, bpp, payload)
    x_hat: Tensor  # the plain decode, [1,3,H,W]


@dataclass(frozen=True)
class Panel:
    title: str
    image: Tensor  # [1,3,H,W] on the 8-bit grid
    bpp: float | None = None
    psnr: float | None = None
    swd: float | None = None
    swd_std: float | None = None


def decode(coded: Coded) -> tuple[Tensor, str] | None:
    return coded.x_hat, f"{coded.codec} q{coded.quality}"


def enhance_fast(coded: Coded) -> tuple[Tensor, str] | None:
    enhancer = _enhancer()
    sigma = enhancer.table_sigma(coded.codec, coded.quality)
    return enhancer(coded.x_hat, sigma, seed=0), f"+ enhancer, sigma {sigma:.2f}"


def fuse(coded: Coded) -> tuple[Tensor, str] | None:
    if coded.codec not in FUSION_MODULES:
        return None
    module = load_fusion(fusion_name_for(coded.codec, coded.quality))
    y, _ = decode_file_fused(coded.data, module, FUSION_TAU, seed=0)
    return y, f"+ latent fusion, tau {FUSION_TAU:g}"


@functools.cache
def _enhancer() -> Enhancer:
    return Enhancer.from_pretrained(CONSISTENCY_MODEL, "fast")  # loaded once for all codecs


# name -> function of a Coded image: (output, panel title), or None where it does not apply.
METHODS: dict[str, Callable[[Coded], tuple[Tensor, str] | None]] = {
    "decode": decode,
    "enhance:fast": enhance_fast,
    "fusion": fuse,
}


def _timed(what: str, since: float) -> float:
    """Print a step's wall time (since `since`); return now, the next step's start."""
    now = time.perf_counter()
    print(f"  {now - since:6.1f} s  {what}", flush=True)
    return now


def run_demo(x: Tensor, codecs=DEFAULT_CODECS, methods=DEFAULT_METHODS) -> list[Panel]:
    """The panels: the original, then every method's output for every codec (in that order)."""

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PerceptError(f"unknown demo method(s) {unknown}: choose from {', '.join(METHODS)}")
    t = time.perf_counter()
    outputs: list[tuple[str, Tensor, float | None]] = [("original", x, None)]
    for name, quality in codecs:
        codec = get_codec(name, quality)
        data = encode_image(x, codec)
        x_hat, record = decode_file(data)
        coded = Coded(name, quality, data, record, x_hat)
        t = _timed(f"{name} q{quality}: encode + decode ({record.bpp:.3f} bpp)", t)
        for method in methods:
            result = METHODS[method](coded)
            if result is None:
                continue
            y, title = result
            outputs.append((title, quantize(y), record.bpp))
            if method != "decode":
                t = _timed(f"{name} q{quality}: {method}", t)
    panels = []
    for title, y, rate in outputs:
        # 512 patches per pyramid level and seed: one image gives few, and a whole-image gate
        # (benchmarks/enhancer_gate.py --crop full) uses as many
        realism = swd([x], [y], patches_per_image=512)
        score = None if rate is None else float(psnr(x, y)[0])
        panels.append(Panel(title, y, rate, score, realism.mean, realism.std))
    _timed("realism (SWD) and PSNR of every panel", t)
    return panels


def detail_window(x: Tensor, size: int) -> tuple[int, int]:
    """(top, left) of the size x size window with the most fine detail in x (energy of x minus
    its 5x5 box blur, on a 16 px grid): where decoders differ most visibly."""
    grey = x[0].mean(0, keepdim=True)[None]
    blurred = torch.nn.functional.avg_pool2d(grey, 5, 1, 2, count_include_pad=False)
    energy = ((grey - blurred) ** 2)[0, 0]
    h, w = energy.shape
    size_h, size_w = min(size, h), min(size, w)
    pooled = torch.nn.functional.avg_pool2d(energy[None, None], (size_h, size_w), 16)[0, 0]
    i = int(pooled.argmax())
    return (i // pooled.shape[1]) * 16, (i % pooled.shape[1]) * 16


def compose(panels: list[Panel], zoom: tuple[int, int], source: str, panel: int = PANEL):
    """The picture: whole images on top (scaled to `panel` px wide, the crop outlined), the
    `panel` x `panel` crop at `zoom` (top, left) below at 1:1, and each panel's figures."""


    h, w = panels[0].image.shape[-2:]
    scale = panel / w
    top_h = round(h * scale)
    crop_h, crop_w = min(panel, h), min(panel, w)
    font = ImageFont.load_default(size=12)
    line, gap, head = 15, 6, 20
    label_h = 3 * line + 4
    width = len(panels) * (panel + gap) - gap
    height = head + label_h + top_h + gap + crop_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    caption = f"{source}: whole (top), 1:1 crop (bottom); SWD x1e3: lower = more real"
    draw.text((2, 3), caption, fill="black", font=font)
    zy, zx = zoom
    for i, p in enumerate(panels):
        left = i * (panel + gap)
        img = tensor_to_pil(p.image)
        canvas.paste(img.resize((panel, top_h), Image.LANCZOS), (left, head + label_h))
        box = (zx * scale, zy * scale, (zx + crop_w) * scale, (zy + crop_h) * scale)
        draw.rectangle(
            [left + box[0], head + label_h + box[1], left + box[2], head + label_h + box[3]],
            outline="yellow",
        )
        canvas.paste(
            img.crop((zx, zy, zx + crop_w, zy + crop_h)), (left, head + label_h + top_h + gap)
        )
        if p.bpp is None:
            lines = [p.title, "", f"SWD {p.swd:.0f} (its floor)"]
        else:
            lines = [
                p.title,
                f"{p.bpp:.3f} bpp, {p.psnr:.2f} dB",
                f"SWD {p.swd:.0f} +- {p.swd_std:.0f}",
            ]
        for k, text in enumerate(lines):
            draw.text((left + 2, head + k * line), text, fill="black", font=font)
    return canvas


def _zoom(text: str | None, x: Tensor, panel: int) -> tuple[int, int] | None:
    """--zoom TOP,LEFT checked against the photo (None when it does not fit or parse)."""
    if text is None:
        return detail_window(x, panel)
    try:
        top, left = (int(v) for v in text.split(","))
    except ValueError:
        return None
    h, w = x.shape[-2:]
    if not (0 <= top <= h - min(panel, h) and 0 <= left <= w - min(panel, w)):
        return None
    return top, left


def _print_table(panels: list[Panel]) -> None:
    print(f"\n{'panel':<32} {'bpp':>7} {'PSNR dB':>8} {'SWD x1e3':>14}")
    for p in panels:
        rate = "" if p.bpp is None else f"{p.bpp:.3f}"
        score = "" if p.psnr is None else f"{p.psnr:.2f}"
        print(f"{p.title:<32} {rate:>7} {score:>8} {p.swd:>7.1f} +- {p.swd_std:.1f}")
    print(
        "SWD: sliced Wasserstein distance of Laplacian-pyramid patches to the original's "
        "(percept.metrics.swd, 512 patches per level, 4 seeds: mean +- std over seeds; lower = "
        "more real; the original's own is the estimate's noise floor)"
    )


def main(argv: list[str]) -> int:
    p = _parser("demo", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--out", type=Path, default=Path("percept-demo.png"))
    p.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), help=f"of {', '.join(METHODS)}"
    )
    p.add_argument(
        "--zoom", default=None, metavar="TOP,LEFT", help="the crop's corner (default: most detail)"
    )
    p.add_argument(
        "--panel",
        type=int,
        default=PANEL,
        help=f"panel width and crop side in pixels (default {PANEL}; the README's picture: 136)",
    )
    args = p.parse_args(argv[1:] if argv and argv[0] == "demo" else argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown demo method(s) {unknown}: choose from {', '.join(METHODS)}")
    if args.panel < 96:
        p.error("--panel must be at least 96 (the labels need the room)")


    directory = args.out.parent if str(args.out.parent) else Path(".")
    if not directory.is_dir():
        raise PerceptError(f"cannot write {args.out}: directory {directory} does not exist")
    start = time.perf_counter()
    x, source = demo_photo()
    zoom = _zoom(args.zoom, x, args.panel)
    if zoom is None:
        p.error(
            f"--zoom expects TOP,LEFT in pixels with the {args.panel} px crop inside the "
            f"{x.shape[-1]}x{x.shape[-2]} photo, got {args.zoom!r}"
        )
    print(f"photo: {source} ({x.shape[-1]}x{x.shape[-2]})", flush=True)
    panels = run_demo(x, DEFAULT_CODECS, args.methods)
    buf = io.BytesIO()
    compose(panels, zoom, Path(source).name, args.panel).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buf.getvalue())
    _print_table(panels)
    print(f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
