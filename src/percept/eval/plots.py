"""Plots of results tables: rate-distortion, rate-perception, perception-distortion, time-quality;
and `image_panel`, images side by side at full resolution for visual comparison.

Each helper takes a tidy pandas DataFrame, one row per (codec, method, setting) operating point with
columns such as ``codec``, ``method``, ``quality``, ``bpp``, ``psnr``, ``ms_ssim``, ``lpips``, ``fid``,
``swd``, ``decode_s``, draws one line per group with seaborn, and returns the matplotlib Axes so a
notebook can add titles or reference lines. Axis labels say which direction is better.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

# Direction and label of the metrics the project reports.
METRICS: dict[str, tuple[str, bool]] = {
    "bpp": ("rate (bits per pixel)", False),
    "psnr": ("PSNR (dB)", True),
    "ms_ssim": ("MS-SSIM", True),
    "ssimulacra2": ("SSIMULACRA 2", True),
    "lpips": ("LPIPS (AlexNet)", False),
    "fid": ("FID", False),
    "kid": ("KID", False),
    "swd": ("SWD x1e3 (reference-normalised)", False),
    "decode_s": ("decoding time (s)", False),
    "mse_ratio": ("MSE / MSE of the base decode", False),
}


def _label(column: str) -> str:
    name, higher = METRICS.get(column, (column, None))
    if higher is None or column == "bpp":
        return name
    return f"{name}, {'higher' if higher else 'lower'} is better"


def _curve(
    df: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None,
    style: str | None,
    sort: bool,
    ax: Axes | None,
    logx: bool = False,
) -> Axes:
    missing = [c for c in (x, y, hue, style) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(
            f"results table has no column(s) {', '.join(missing)}; it has {', '.join(df.columns)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    hue = hue if hue in df.columns else None
    style = style if style in df.columns and df[style].nunique() > 1 else None
    data = df.sort_values([c for c in (hue, style) if c] + [x]) if sort else df
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        style=style,
        markers=True,
        dashes=bool(style),
        sort=sort,
        estimator=None,
        ax=ax,
    )
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(True, alpha=0.3)
    return ax


def rate_distortion(
    df: pd.DataFrame,
    metric: str = "psnr",
    *,
    rate: str = "bpp",
    hue: str = "codec",
    style: str | None = "method",
    ax: Axes | None = None,
) -> Axes:
    """Distortion metric (PSNR, MS-SSIM, ...) against rate, one line per codec (and method)."""
    return _curve(df, rate, metric, hue=hue, style=style, sort=True, ax=ax)


def rate_perception(
    df: pd.DataFrame,
    metric: str = "lpips",
    *,
    rate: str = "bpp",
    hue: str = "codec",
    style: str | None = "method",
    ax: Axes | None = None,
) -> Axes:
    """Perception metric (LPIPS, FID, SWD, ...) against rate; lower is better for most of them."""
    return _curve(df, rate, metric, hue=hue, style=style, sort=True, ax=ax)


def perception_distortion(
    df: pd.DataFrame,
    *,
    distortion: str = "psnr",
    perception: str = "fid",
    hue: str = "codec",
    style: str | None = "method",
    ax: Axes | None = None,
) -> Axes:
    """The perception-distortion plane (Blau & Michaeli 2018): points in row order, so a sweep of one
    knob (sigma, tau) is drawn as the path it traces."""
    return _curve(df, distortion, perception, hue=hue, style=style, sort=False, ax=ax)


def time_quality(
    df: pd.DataFrame,
    metric: str = "fid",
    *,
    time: str = "decode_s",
    hue: str = "method",
    style: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Quality against decoding time on a log axis (paper 1's fast / medium / slow presets)."""
    return _curve(df, time, metric, hue=hue, style=style, sort=True, ax=ax, logx=True)


def image_panel(images, *, titles=None, ncols: int | None = None, inches: float = 3.0):
    """Images ([1,3,H,W] or [3,H,W] tensors in [0,1], a name -> image mapping) side by side.

    No resampling beyond matplotlib's display: pass crops to look at detail. Returns the Figure.
    """
    names = list(images)
    ncols = ncols or len(names)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(inches * ncols, inches * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        image = images[name]
        image = image[0] if image.dim() == 4 else image
        ax.imshow(
            image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest"
        )
        ax.set_title(titles[name] if titles and name in titles else name, fontsize="small")
    fig.tight_layout()
    return fig
