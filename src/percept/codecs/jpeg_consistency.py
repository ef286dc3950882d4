"""Bitstream consistency for JPEG: keep an enhanced image inside the quantisation cells of its file.

A JPEG file says, for every 8x8 block and DCT frequency of each colour plane, which quantisation
cell the original's coefficient fell in: [(k - 1/2) q, (k + 1/2) q] for the stored index k and the
table's step q. Any image whose coefficients lie in those cells encodes to the same indices, so it
is as consistent with the bitstream as the plain decode (which sits at the cells' centres). The
enhancer's output is not: a weak prior at a large sigma invents texture and moves edges that the
file rules out. `project_jpeg` moves each coefficient of the output to the nearest point of its
cell (a Euclidean projection, since the block DCT is orthonormal), which can only bring the output
closer to the original in every coefficient the file constrains (paper 1 gets a similar constraint
for differentiable codecs from DPS in its slow preset; for JPEG it is exact and costs two DCTs).

What is projected: every colour plane. Luma and unsubsampled (4:4:4) chroma directly. 4:2:0 chroma
(Pillow's default) through the encoder's 2x2 mean: the file pins the DCT of the half-resolution
chroma plane, so the projection moves that plane's coefficients into their cells and adds the
change back to each 2x2 group of full-resolution samples (the least change that does it: the
exact projection onto the images whose 2x2 chroma means lie in the cells). Other subsamplings
(4:2:2, 4:1:1) leave chroma as the enhancer made it. Partial blocks at the right and bottom edges
(sizes not a multiple of 8, or of 16 for 4:2:0 chroma) are left alone too: the encoder filled them
with samples the decoder never sees. The cells are read from the decoded planes themselves
(libjpeg's YCbCr output before colour conversion; 4:2:0 chroma from a half-scale decode, where
libjpeg's IDCT gives the stored chroma plane before any upsampling), whose block DCT is the
dequantised coefficients up to the decoder's rounding (far below a step at the qualities where it
matters). Without the chroma cells a large sigma paints colour blotches over the file's colours.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

from percept.errors import CodecError, PerceptError

_B = 8

# What the projection constrains, for records (results made before 4:2:0 chroma was projected say
# nothing about planes, or name luma alone).
PLANES = "luma and chroma cells (4:2:0 chroma through its 2x2 means)"


def _dct_matrix(n: int = _B) -> np.ndarray:
    """The orthonormal DCT-II matrix (JPEG's FDCT, level shift aside)."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


_C = _dct_matrix()


# JFIF full-range RGB <-> YCbCr (0..255 units, chroma offset by 128), as libjpeg converts.
_RGB2YCC = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ]
)
_YCC2RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136286, -0.714136286], [1.0, 1.772, 0.0]])
_OFFSET = np.array([0.0, 128.0, 128.0])


def _to_ycc(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB -> YCbCr in numpy (the reference the torch projection is tested against)."""
    return rgb @ _RGB2YCC.T + _OFFSET


def _to_rgb(ycc: np.ndarray) -> np.ndarray:
    return (ycc - _OFFSET) @ _YCC2RGB.T


def _block_dct(plane: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Blockwise 2D DCT of an [H, W] plane (H, W multiples of 8) as [H/8, W/8, 8, 8], or back."""
    if inverse:
        nby, nbx = plane.shape[:2]
        blocks = np.einsum("ki,abkl,lj->abij", _C, plane, _C)
        return blocks.transpose(0, 2, 1, 3).reshape(nby * _B, nbx * _B)
    h, w = plane.shape
    blocks = plane.reshape(h // _B, _B, w // _B, _B).transpose(0, 2, 1, 3)
    return np.einsum("ik,abkl,jl->abij", _C, blocks, _C)


class JpegCells:
    """The quantisation cells a JPEG payload pins down. Per projected plane (0 = Y, 1 = Cb,
    2 = Cr) the cell centres [H/8, W/8, 8, 8] and the steps [8, 8] (in 0..255 sample units);
    `planes` lists the planes stored at full resolution, `halved` the 4:2:0 chroma planes (their
    centres are [H/16, W/16, 8, 8], for the half-resolution plane)."""

    def __init__(self, payload: bytes):
        try:
            with Image.open(io.BytesIO(payload)) as img:
                if img.format != "JPEG":
                    raise CodecError(f"not a JPEG payload ({img.format})")
                layers, tables = list(img.layer), dict(img.quantization)
                if img.mode != "RGB" or len(layers) != 3:
                    raise CodecError(
                        f"JPEG consistency handles 3-component YCbCr files; this one is {img.mode} "
                        f"with {len(layers)} components"
                    )
                img.draft("YCbCr", img.size)
                planes = np.asarray(img, dtype=np.float64)
            self.height, self.width = planes.shape[:2]
            self.h8, self.w8 = self.height // _B * _B, self.width // _B * _B
            self.h16, self.w16 = self.height // 16 * 16, self.width // 16 * 16
            luma = layers[0][1:3]
            self.planes = [c for c in range(3) if c == 0 or layers[c][1:3] == luma]
            halved = [c for c in (1, 2) if luma == (2, 2) and layers[c][1:3] == (1, 1)]
            if not (self.h16 and self.w16):
                halved = []
            self.centres, self.steps = {}, {}
            for c in (*self.planes, *halved):
                self.steps[c] = np.asarray(tables[layers[c][3]], dtype=np.float64).reshape(_B, _B)
            for c in self.planes:
                self.centres[c] = _block_dct(planes[: self.h8, : self.w8, c] - 128)
            if halved:
                with Image.open(io.BytesIO(payload)) as img:
                    img.draft("YCbCr", (self.width // 2, self.height // 2))
                    half = np.asarray(img, dtype=np.float64)
                for c in halved:
                    coef = _block_dct(half[: self.h16 // 2, : self.w16 // 2, c] - 128)
                    if _on_lattice(coef, self.steps[c]):
                        self.centres[c] = coef
            self.halved = [c for c in halved if c in self.centres]
        except (OSError, ValueError, SyntaxError) as exc:
            raise CodecError(f"the JPEG payload cannot be read: {exc}") from None
        self._cache: dict = {}

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """The DCT matrix, colour matrices and offset, centres and steps as tensors on `device`
        (made once per device and dtype, not at every projection)."""
        key = (str(device), dtype)
        if key not in self._cache:

            def as_t(a):
                return torch.as_tensor(a, dtype=dtype, device=device)

            self._cache[key] = (
                as_t(_C),
                as_t(_RGB2YCC),
                as_t(_YCC2RGB),
                as_t(_OFFSET)[:, None, None],
                {c: as_t(v) for c, v in self.centres.items()},
                {c: as_t(v) for c, v in self.steps.items()},
            )
        return self._cache[key]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x [1,3,H,W] in [0,1] (the decoded size) -> its projection onto the cells, in [0,1].

        Runs in torch on x's device (float64 on the CPU, float32 elsewhere), so a CUDA sampler
        projecting at every step never copies the image to the host."""
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise PerceptError(f"project needs one RGB image [1,3,H,W], got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise PerceptError(
                f"the image is {x.shape[-2]}x{x.shape[-1]}, the JPEG {self.height}x{self.width}"
            )
        if self.h8 == 0 or self.w8 == 0:
            return x.clone()
        work = _work_dtype(x.device)
        dct, rgb2ycc, ycc2rgb, offset, centres, steps = self._tensors(x.device, work)
        ycc = torch.einsum("ij,jhw->ihw", rgb2ycc, x[0].to(work) * 255.0) + offset
        for c in self.planes:
            plane = ycc[c, : self.h8, : self.w8]
            ycc[c, : self.h8, : self.w8] = _into_cells(plane - 128, dct, centres[c], steps[c]) + 128
        for c in self.halved:
            full = ycc[c, : self.h16, : self.w16]
            means = full.reshape(self.h16 // 2, 2, self.w16 // 2, 2).mean(dim=(1, 3))
            change = _into_cells(means - 128, dct, centres[c], steps[c]) + 128 - means
            change = change.repeat_interleave(2, 0).repeat_interleave(2, 1)
            ycc[c, : self.h16, : self.w16] = full + change
        out = torch.einsum("ij,jhw->ihw", ycc2rgb, ycc - offset)
        return (out / 255.0).clamp(0.0, 1.0)[None].to(dtype=x.dtype)


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU (exact to the numpy reference), float32 on accelerators (fast there)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def _into_cells(plane: torch.Tensor, dct, centres, steps) -> torch.Tensor:
    """A level-shifted plane [8a, 8b] with each block-DCT coefficient moved into its cell."""
    h, w = plane.shape
    blocks = plane.reshape(h // _B, _B, w // _B, _B).permute(0, 2, 1, 3)
    coef = torch.einsum("ik,abkl,jl->abij", dct, blocks, dct)
    half = steps / 2
    coef = torch.minimum(torch.maximum(coef, centres - half), centres + half)
    blocks = torch.einsum("ki,abkl,lj->abij", dct, coef, dct)
    return blocks.permute(0, 2, 1, 3).reshape(h, w)


def _on_lattice(coef: np.ndarray, steps: np.ndarray) -> bool:
    """Whether block-DCT coefficients are dequantised values (multiples of their steps, up to the
    decoder's rounding): a check that the half-scale decode gave the stored chroma plane, not an
    upsampled or rescaled one (a libjpeg without IDCT scaling would), before its cells are used."""
    index = coef / steps
    nonzero = np.abs(np.round(index)) >= 1
    if nonzero.sum() < 16:
        return True
    return float(np.abs(index - np.round(index))[nonzero].mean()) < 0.1


def project_jpeg(x: torch.Tensor, payload: bytes) -> torch.Tensor:
    """`JpegCells(payload).project(x)`: x moved into the quantisation cells of the JPEG payload."""
    return JpegCells(payload).project(x)


def projector_for(codec: str, payload: bytes):
    """The consistency projection (a function of [1,3,H,W] images) for a file's payload; a clear
    error for codecs that have none."""
    if codec != "jpeg":
        raise PerceptError(
            f"consistency projection needs a JPEG file (its quantisation cells); {codec} has none"
        )
    return JpegCells(payload).project
