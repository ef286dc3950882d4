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
    "mse_ratio": ("MSE ratio (MSE / MSE of the plain decode)", False),
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


def _free_labels(ax: Axes, points, texts, *, min_px: float = 14.0, offset=(4, 4)) -> None:
    """Annotate points with texts, skipping a label that would sit within `min_px` display pixels
    of one already placed or of another point's label anchor, so labels never collide."""
    ax.autoscale_view()
    placed: list[tuple[float, float]] = []
    for (x, y), text in zip(points, texts):
        px, py = ax.transData.transform((x, y))
        if any(abs(px - qx) < 3.5 * min_px and abs(py - qy) < min_px for qx, qy in placed):
            continue
        placed.append((px, py))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=7,
                    color="0.25")  # fmt: skip


def tradeoff_panels(
    table: pd.DataFrame,
    *,
    x: str = "mse_ratio",
    y: str = "swd",
    hue: str = "preset",
    col: str = "setting",
    step: str = "sigma",
    step_label: str = "σ",
    label_hue: str | None = None,
    rule: float | None = 2.0,
    inches: float = 4.6,
    title=None,
):
    """The perception-distortion plane per panel (`col`), one line per `hue` in row order (a sweep
    of one knob traces its path), with the spread `swd_std` as error bars, the realism floor
    `swd_floor` dashed, the paper's MSE-doubling rule dotted, and the `step` values (sigma, alpha)
    of the `label_hue` line (default: the first) written beside its points where they do not
    collide. The legend sits outside the panels, to their right. Returns the Figure."""
    panels = list(dict.fromkeys(table[col]))
    fig, axes = plt.subplots(1, len(panels), figsize=(inches * len(panels), inches * 0.85),
                             squeeze=False)  # fmt: skip
    hues = list(dict.fromkeys(table[hue]))
    colors = {h: f"C{i}" for i, h in enumerate(hues)}
    markers = dict(zip(hues, "osD^vP*X"))
    label_hue = label_hue if label_hue in hues else hues[0]
    for ax, panel in zip(axes[0], panels):
        part = table[table[col] == panel]
        for h in hues:
            line = part[part[hue] == h]
            if line.empty:
                continue
            ax.plot(line[x], line[y], marker=markers[h], color=colors[h], label=str(h), ms=5)
            if "swd_std" in line and y == "swd":
                ax.errorbar(line[x], line[y], yerr=line["swd_std"], fmt="none", ecolor=colors[h],
                            alpha=0.5, capsize=2)  # fmt: skip
        if "swd_floor" in part and y == "swd":
            ax.axhline(part["swd_floor"].iloc[0], ls="--", color="gray",
                       label="floor: originals vs themselves")  # fmt: skip
        if rule is not None and x == "mse_ratio":
            ax.axvline(rule, ls=":", color="black", label=f"MSE ×{rule:g} (paper's rule)")
        ax.set_xlabel("\n".join(_label(x).rsplit(", ", 1)))
        ax.set_ylabel("\n".join(_label(y).rsplit(", ", 1)))
        if isinstance(title, str):
            text = title.format(panel=panel)
        else:
            text = title(panel) if callable(title) else str(panel)
        ax.set_title(text, fontsize="medium")
        labelled = part[part[hue] == label_hue]
        _free_labels(ax, zip(labelled[x], labelled[y]),
                     [f"{step_label}={v:g}" for v in labelled[step]])  # fmt: skip
    handles, labels = {}, []
    for ax in axes[0]:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb not in handles:
                handles[lb] = hd
                labels.append(lb)
    fig.legend([handles[lb] for lb in labels], labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)  # fmt: skip
    fig.tight_layout()
    return fig
