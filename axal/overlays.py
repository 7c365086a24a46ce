"""Uncertainty overlays of one image: image, prediction and uncertainty side by side (paper figs
7-8), and the heatmap with a suggestion's box that an annotator opens (``annotate``).

A figure must read the same whatever it shows: the prediction panel uses one fixed colour per
class (a map that is all myelin and one that is all background look different), and the
uncertainty panel starts at 0 and names its measure, so a colour means a value.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from axal.atomic import atomic_write
from axal.domain import CLASS_NAMES

CLASS_COLOURS = ("#2b1d4e", "#f2d338", "#2aa198")  # dark / yellow / teal: distinct in grey too


def class_colours(n_classes: int) -> tuple[list[str], list[str]]:
    """(names, colours) of the classes 0..n-1; beyond the three known ones, tab10 colours."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    names, colours = [], []
    for k in range(n_classes):
        names.append(CLASS_NAMES[k] if k < len(CLASS_NAMES) else f"class {k}")
        colours.append(
            CLASS_COLOURS[k] if k < len(CLASS_COLOURS) else to_hex(colormaps["tab10"](k % 10))
        )
    return names, colours


def save_uncertainty_png(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    uncertainty: np.ndarray,
    title: str = "",
    *,
    measure: str = "uncertainty",
    n_classes: int = 2,
    vmax: float | None = None,
    boxes: list[tuple[float, float, float, float]] | None = None,
) -> Path:
    """Write a 1x3 PNG; uses matplotlib's object API so the caller's backend is untouched.

    ``prediction`` is the class map (argmax of the MC mean), ``uncertainty`` the strategy's
    per-pixel map; both 2-D, possibly downsampled copies. ``measure`` names the uncertainty
    (the strategy's ``measure``, e.g. "BALD (mutual information, nats)"); ``n_classes`` fixes
    the prediction's colours (class k is always the same colour); the uncertainty colour
    scale runs from 0 to ``vmax`` (default: the map's maximum), shown on the colour bar.
    ``boxes`` (x, y, w, h in the maps' pixels) outline picked tiles on every panel.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    for name, data in (("prediction", prediction), ("uncertainty", uncertainty)):
        if np.ndim(data) != 2:
            raise ValueError(f"{name} map must be 2-D, got shape {np.shape(data)}")
    if n_classes < 2:
        raise ValueError(f"n_classes={n_classes} must be >= 2")

    unc = np.asarray(uncertainty, dtype=np.float32)
    finite = unc[np.isfinite(unc)]
    top = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    top = top if top > 0 else 1.0  # an all-zero map stays at the bottom of the scale

    fig = Figure(figsize=(9.6, 3.9), dpi=80, layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(np.asarray(image, dtype=np.float32), cmap="gray")
    axes[0].set_title("image", fontsize=12)

    names, colours = class_colours(n_classes)
    axes[1].imshow(
        np.asarray(prediction, dtype=np.float32),
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=n_classes - 0.5,
        interpolation="nearest",
    )
    axes[1].set_title("prediction (MC mean, argmax)", fontsize=12)
    axes[1].legend(
        handles=[Patch(facecolor=c, edgecolor="0.5", label=n) for n, c in zip(names, colours)],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=n_classes,
        fontsize=10,
        frameon=False,
        handlelength=1.0,
        columnspacing=0.8,
    )

    shown = axes[2].imshow(unc, cmap="inferno", vmin=0.0, vmax=top)
    axes[2].set_title("\n".join(textwrap.wrap(measure, 30)), fontsize=11)
    bar = fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    bar.ax.tick_params(labelsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for x, y, w, h in boxes or []:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec="#00e5ff", lw=1.2))
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def save_overlay_png(
    path: str | Path,
    image: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    uncertainty: np.ndarray | None = None,
    title: str = "",
    *,
    measure: str = "uncertainty",
    vmax: float | None = None,
) -> Path:
    """The image with its uncertainty as a translucent heatmap and the suggested boxes.

    What an annotator looks at before labelling a suggestion: where the model is unsure, and
    which region (``boxes``: x, y, width, height in the pixels of ``image``) to label first.
    The first box is the suggestion itself (solid), the others are more of the same batch.
    The colour scale runs from 0 to ``vmax`` (default: this map's maximum), shown on the
    colour bar: one ``vmax`` for a round's overlays makes a colour the same value in each.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(4.6, 4.3), dpi=80, layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.asarray(image, dtype=np.float32), cmap="gray")
    if uncertainty is not None:
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        unc = np.nan_to_num(np.asarray(uncertainty, dtype=np.float32))
        top = float(vmax) if vmax else (float(unc.max()) if unc.size and unc.max() > 0 else 1.0)
        level = np.clip(unc / top, 0.0, 1.0)
        heat = colormaps["inferno"](level)
        heat[..., 3] = 0.85 * np.sqrt(level)  # certain pixels leave the image visible
        ax.imshow(heat, interpolation="nearest")
        shown = ScalarMappable(Normalize(0.0, top), cmap="inferno")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("\n".join(textwrap.wrap(measure, 40)), fontsize=7)
    for j, (x, y, w, h) in enumerate(boxes):
        ax.add_patch(
            Rectangle(
                (x - 0.5, y - 0.5),
                w,
                h,
                fill=False,
                edgecolor="#00e5ff",
                linewidth=2.0 if j == 0 else 1.0,
                linestyle="-" if j == 0 else "--",
            )
        )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write a figure as PNG atomically (a reader never sees half a picture)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path
