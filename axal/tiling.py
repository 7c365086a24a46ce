"""Whole-image inference by overlapping sliding windows.

Large EM images (SEM reaches 2001 x 2001) never go through the network whole: they are cut into
``patch`` x ``patch`` tiles with ``overlap`` pixels shared between neighbours, and per-tile
outputs are blended back with a weight that falls off towards tile borders (borders see less
context, so they are the least trustworthy pixels). Images smaller than a tile are padded by
reflection. Evaluation and MC-dropout scoring both go through here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


def tile_starts(size: int, patch: int, overlap: int) -> list[int]:
    """Start offsets that cover ``[0, size)`` with tiles of ``patch`` (last one flush right)."""
    if size <= patch:
        return [0]
    step = max(1, patch - overlap)
    starts = list(range(0, size - patch, step))
    starts.append(size - patch)
    return starts


def _ramp(n: int, overlap: int, device: torch.device | None) -> torch.Tensor:
    ramp = torch.ones(n, device=device)
    k = min(overlap, n // 2)
    if k > 0:
        edge = (torch.arange(k, device=device, dtype=torch.float32) + 1) / (k + 1)
        ramp[:k] = edge
        ramp[-k:] = edge.flip(0)
    return ramp


def blend_weight(
    height: int, width: int, overlap: int, device: torch.device | None = None
) -> torch.Tensor:
    """Weight map (height x width): 1 in the centre, linear ramp over ``overlap`` at borders."""
    return _ramp(height, overlap, device)[:, None] * _ramp(width, overlap, device)[None, :]


def pad_to(image: torch.Tensor, min_h: int, min_w: int, multiple: int) -> torch.Tensor:
    """Reflect-pad (..., H, W) to at least (min_h, min_w) and a multiple of ``multiple``."""
    h, w = image.shape[-2:]
    th = max(min_h, -(-h // multiple) * multiple)
    tw = max(min_w, -(-w // multiple) * multiple)
    if (th, tw) == (h, w):
        return image
    mode = "reflect" if th - h < h and tw - w < w else "replicate"
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    x = F.pad(x, (0, tw - w, 0, th - h), mode=mode)
    return x[0] if squeeze else x


def iter_tiles(height: int, width: int, patch: int, overlap: int) -> Iterator[tuple[int, int]]:
    for y in tile_starts(height, patch, overlap):
        for x in tile_starts(width, patch, overlap):
            yield y, x


def sliding_window(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    multiple: int = 32,
) -> torch.Tensor:
    """Apply ``fn`` (B,C,p,p) -> (B,K,p,p) over a (C,H,W) image; return the blended (K,H,W).

    Memory stays at the output map plus one band of window rows, whatever the image size;
    :func:`sliding_window_bands` hands over the rows without holding the output whole.
    """
    from axal.streaming import ArrayRows, collect

    h = int(image.shape[-2])
    bands = sliding_window_bands(fn, ArrayRows(image), patch, overlap, batch_size, multiple)
    return collect(((y0, {"out": band}) for y0, band in bands), h)["out"]


def sliding_window_bands(
    fn: Callable[[torch.Tensor], torch.Tensor],
    source,
    patch: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    multiple: int = 32,
    device: torch.device | None = None,
    mode=None,
    dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`sliding_window` over a row source (``axal.streaming``): yields (first row,
    (K, n, W) blended output) bands top down, each as soon as no later window touches it.
    ``mode``: a context for each step (e.g. ``torch.inference_mode``); ``dtype``: of the
    windows (None: the source's)."""
    from axal.streaming import Windows, as_rows, blend_bands

    source = as_rows(source)
    h, w = source.shape
    win = Windows.of(h, w, patch, overlap, multiple)
    probe = source.rows(0, 0)
    where = device or (probe.device if torch.is_tensor(probe) else None)
    weight = blend_weight(win.ph, win.pw, overlap, where)

    def run(tiles: torch.Tensor, _corners) -> dict[str, torch.Tensor]:
        return {"out": fn(tiles)}

    def finish(sums: dict[str, torch.Tensor], norm: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": sums["out"] / norm.clamp_min(1e-8)}

    kw = {} if mode is None else {"mode": mode}  # e.g. torch.inference_mode, per band
    bands = blend_bands(source, win, batch_size, run, weight, finish, device, dtype=dtype, **kw)
    for y0, maps in bands:
        yield y0, maps["out"]
