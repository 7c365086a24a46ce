"""Uncertainty figures: image, prediction and uncertainty heatmap side by side (paper figs 7-8)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from axal.atomic import atomic_write


def save_uncertainty_png(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    uncertainty: np.ndarray,
    title: str = "",
) -> Path:
    """Write a 1x3 PNG; uses matplotlib's object API so the caller's backend is untouched.

    ``prediction`` is the class map (argmax of the MC mean), ``uncertainty`` the strategy's
    per-pixel map; both 2-D, possibly downsampled copies.
    """
    from matplotlib.figure import Figure

    for name, data in (("prediction", prediction), ("uncertainty", uncertainty)):
        if np.ndim(data) != 2:
            raise ValueError(f"{name} map must be 2-D, got shape {np.shape(data)}")

    fig = Figure(figsize=(9, 3.3), dpi=80)
    axes = fig.subplots(1, 3)
    panels = [
        (image, "image", "gray", None),
        (prediction, "prediction", "viridis", None),
        (uncertainty, "uncertainty", "inferno", None),
    ]
    for ax, (data, name, cmap, _) in zip(axes, panels):
        shown = ax.imshow(np.asarray(data, dtype=np.float32), cmap=cmap)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if name == "uncertainty":
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path
