"""Row bands: sliding-window inference on images too large to hold as float maps.

A 20,000 x 20,000 SEM mosaic is 400 MB as 8-bit grey, but 1.6 GB as float32 and 4.8 GB as
three float32 class maps. Sliding windows never need more than the rows of one window row at a
time: here an image is a *row source* (``shape`` and ``rows(y0, y1)``), windows are cut from
bands of it, each window's output is blended into a :class:`BandBlend`, and rows leave as soon
as no later window touches them. Every step does the arithmetic of its whole-image counterpart
in the same order (``axal.tiling.sliding_window`` and the MC engine are built on it), so results
are identical, and memory is one band: about ``channels x (patch + overlap) x width`` values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from axal.tiling import tile_starts

Band = tuple[int, dict[str, torch.Tensor]]  # (first row, maps of the band by name)


class RowSource(Protocol):
    """An image read a band of rows at a time."""

    shape: tuple[int, int]  # (H, W)

    def rows(self, y0: int, y1: int) -> np.ndarray | torch.Tensor:
        """Rows ``y0:y1``: (n, W) or (C, n, W), float32."""
        ...


class ArrayRows:
    """A row source over an image already in memory (H, W) or (C, H, W)."""

    def __init__(self, image: np.ndarray | torch.Tensor) -> None:
        self.image = image
        self.shape = (int(image.shape[-2]), int(image.shape[-1]))

    def rows(self, y0: int, y1: int) -> np.ndarray | torch.Tensor:
        return self.image[..., y0:y1, :]


def as_rows(image: np.ndarray | torch.Tensor | RowSource) -> RowSource:
    return image if hasattr(image, "rows") else ArrayRows(image)


def band_tensor(
    source: RowSource,
    y0: int,
    y1: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Rows of a source as a (C, n, W) tensor on ``device``: of ``dtype``, else float32 unless
    already floating point."""
    x = source.rows(y0, y1)
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if dtype is not None:
        x = x.to(dtype)
    elif not x.is_floating_point():
        x = x.float()
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3:
        raise ValueError(f"expected an image HxW or (C,H,W), got rows of shape {tuple(x.shape)}")
    return x.to(device) if device is not None else x


def _pad_index(n: int, target: int, mode: str) -> np.ndarray:
    """Source index of each of ``target`` positions: ``F.pad``'s reflect or replicate."""
    i = np.arange(target)
    if mode == "reflect":
        return np.where(i < n, i, 2 * (n - 1) - i)
    return np.minimum(i, n - 1)


@dataclass(frozen=True)
class Windows:
    """The windows of an image as ``sliding_window`` lays them out: the image reflect-padded
    (``axal.tiling.pad_to``) to a multiple of ``multiple`` and at least one window, windows of
    ``ph`` x ``pw`` in row-major order."""

    height: int
    width: int
    ph: int
    pw: int
    hh: int  # padded size
    ww: int
    mode: str
    coords: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, height: int, width: int, patch: int, overlap: int, multiple: int) -> Windows:
        ph = min(patch, -(-height // multiple) * multiple)
        pw = min(patch, -(-width // multiple) * multiple)
        hh = max(ph, -(-height // multiple) * multiple)
        ww = max(pw, -(-width // multiple) * multiple)
        mode = "reflect" if hh - height < height and ww - width < width else "replicate"
        coords = tuple(
            (y, x) for y in tile_starts(hh, ph, overlap) for x in tile_starts(ww, pw, overlap)
        )
        return cls(height, width, ph, pw, hh, ww, mode, coords)


class TileCutter:
    """Windows of a row source, cut from cached bands of the padded image (one band per
    window row in use), so the padded image never exists whole."""

    def __init__(
        self,
        source: RowSource,
        win: Windows,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.source, self.win, self.device, self.dtype = source, win, device, dtype
        self.rows = _pad_index(win.height, win.hh, win.mode)
        cols = _pad_index(win.width, win.ww, win.mode)
        self.cols = None if win.ww == win.width else torch.from_numpy(cols)
        self.bands: dict[int, torch.Tensor] = {}

    def band(self, y: int) -> torch.Tensor:
        """Rows ``y : y + ph`` of the padded image, (C, ph, ww)."""
        if y not in self.bands:
            idx = self.rows[y : y + self.win.ph]
            lo, hi = int(idx.min()), int(idx.max()) + 1
            band = band_tensor(self.source, lo, hi, self.device, self.dtype)
            if not np.array_equal(idx, np.arange(lo, hi)):
                band = band[:, torch.from_numpy(idx - lo).to(band.device)]
            if self.cols is not None:
                band = band[:, :, self.cols.to(band.device)]
            self.bands[y] = band
        return self.bands[y]

    def tiles(self, chunk: Sequence[tuple[int, int]]) -> torch.Tensor:
        """(B, C, ph, pw) windows at the corners ``chunk``; bands of rows above are dropped."""
        top = min(y for y, _ in chunk)
        for y in [y for y in self.bands if y < top]:
            del self.bands[y]
        pw = self.win.pw
        return torch.stack([self.band(y)[:, :, x : x + pw] for y, x in chunk])


class BandBlend:
    """Weighted sums of window outputs, and their weights, over the rows still open.

    ``add`` adds one window's values times ``weight``; ``take(upto)`` hands over the rows above
    ``upto`` (their sums and weights, cropped to the image) and forgets them.
    """

    def __init__(self, win: Windows, dtype: torch.dtype | None = None) -> None:
        self.win, self.dtype = win, dtype  # of the sums; None: each value's own
        self.top = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.norm: torch.Tensor | None = None

    def _grow(self, bottom: int, like: dict[str, torch.Tensor], weight: torch.Tensor) -> None:
        held = 0 if self.norm is None else self.norm.shape[0]
        more = bottom - self.top - held
        if more <= 0:
            return
        ww = self.win.ww
        zeros = weight.new_zeros((more, ww))
        self.norm = zeros if self.norm is None else torch.cat([self.norm, zeros])
        for key, value in like.items():
            dtype = self.dtype or value.dtype
            extra = torch.zeros((*value.shape[:-2], more, ww), dtype=dtype, device=weight.device)
            old = self.sums.get(key)
            self.sums[key] = extra if old is None else torch.cat([old, extra], dim=-2)

    def add(self, y: int, x: int, values: dict[str, torch.Tensor], weight: torch.Tensor) -> None:
        ph, pw = weight.shape
        self._grow(y + ph, values, weight)
        rows, cols = slice(y - self.top, y - self.top + ph), slice(x, x + pw)
        for key, value in values.items():
            self.sums[key][..., rows, cols] += value * weight
        assert self.norm is not None
        self.norm[rows, cols] += weight

    def take(self, upto: int) -> tuple[int, dict[str, torch.Tensor], torch.Tensor] | None:
        """(first row, sums, weights) of rows ``top:upto`` inside the image, or None."""
        upto = min(upto, self.win.height)
        n = upto - self.top
        if n <= 0 or self.norm is None:
            return None
        w = self.win.width
        out = {k: v[..., :n, :w] for k, v in self.sums.items()}
        norm = self.norm[:n, :w]
        top = self.top
        self.sums = {k: v[..., n:, :] for k, v in self.sums.items()}
        self.norm = self.norm[n:]
        self.top = upto
        return top, out, norm


def blend_bands(
    source: RowSource,
    win: Windows,
    batch: int,
    run: Callable[[torch.Tensor, Sequence[tuple[int, int]]], dict[str, torch.Tensor]],
    weight: torch.Tensor,
    finish: Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]],
    device: torch.device | None = None,
    mode: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    dtype: torch.dtype | None = None,
    sum_dtype: torch.dtype | None = None,
) -> Iterator[Band]:
    """Run ``run`` on batches of windows (row-major) and yield finished row bands, top down.

    ``run(tiles, corners)`` gives per-window maps by name, (B, ..., ph, pw); ``finish(sums,
    weights)`` turns a band's blended sums into its maps. ``mode`` wraps each step (e.g.
    ``torch.inference_mode``) without leaking into the caller between bands. ``dtype``: of the
    windows (None: the source's, float32 for integers); ``sum_dtype``: of the sums (None: the
    values').
    """
    cutter = TileCutter(source, win, device, dtype)
    blend = BandBlend(win, sum_dtype)
    coords = win.coords
    for i in range(0, len(coords), batch):
        chunk = coords[i : i + batch]
        with mode():
            values = run(cutter.tiles(chunk), chunk)
            for j, (y, x) in enumerate(chunk):
                blend.add(y, x, {k: v[j] for k, v in values.items()}, weight)
            del values
            upto = coords[i + batch][0] if i + batch < len(coords) else win.hh
            ready = blend.take(upto)
            band = None if ready is None else (ready[0], finish(ready[1], ready[2]))
        if band is not None:
            yield band


def collect(bands: Iterator[Band], height: int) -> dict[str, torch.Tensor]:
    """Whole maps from a stream of row bands (the whole-image result)."""
    parts: dict[str, list[torch.Tensor]] = {}
    rows = 0
    for y0, maps in bands:
        assert y0 == rows, "bands must arrive in order"
        for key, value in maps.items():
            parts.setdefault(key, []).append(value)
        rows = y0 + next(iter(maps.values())).shape[-2]
    assert rows == height, f"bands cover {rows} of {height} rows"
    return {k: v[0] if len(v) == 1 else torch.cat(v, dim=-2) for k, v in parts.items()}


# ------------------------------------------------------------------ resampling a stream of rows


class BilinearRows:
    """``F.interpolate(mode="bilinear", align_corners=False)`` of a map arriving in row bands.

    Columns are resampled by ``F.interpolate`` itself (rows kept); rows are interpolated here
    with the indices and weights PyTorch computes (float32), outer over rows as PyTorch does,
    so the result matches the whole-map call to float rounding.
    """

    def __init__(self, in_h: int, out_h: int, out_w: int) -> None:
        self.in_h, self.out_h, self.out_w = in_h, out_h, out_w
        scale = np.float32(in_h) / np.float32(out_h)
        src = scale * (np.arange(out_h, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
        src = np.maximum(src, np.float32(0))
        h0 = np.minimum(np.floor(src).astype(np.int64), in_h - 1)
        lam = np.clip(src - h0.astype(np.float32), 0, 1).astype(np.float32)
        self.h0 = h0
        self.h1 = np.where(h0 < in_h - 1, h0 + 1, h0)
        self.w1 = torch.from_numpy(lam)
        self.w0 = torch.from_numpy((np.float32(1) - lam).astype(np.float32))
        self.buf: torch.Tensor | None = None  # input rows from self.buf_top, columns resampled
        self.buf_top = 0
        self.received = 0  # input rows pushed
        self.done = 0  # output rows handed over

    def push(self, band: torch.Tensor) -> int:
        """Add the next input rows (C, n, W_in); return the end of the output rows now
        complete (take them with :meth:`rows`, then :meth:`advance`)."""
        band = band.float()
        start, self.received = self.received, self.received + band.shape[-2]
        if self.buf_top > start:  # rows no output row needs
            band = band[:, self.buf_top - start :]
        if band.shape[-1] != self.out_w and band.shape[-2]:
            band = F.interpolate(
                band[None], size=(band.shape[-2], self.out_w), mode="bilinear", align_corners=False
            )[0]
        elif band.shape[-1] != self.out_w:
            band = band.new_zeros((*band.shape[:-1], self.out_w))
        self.buf = band if self.buf is None else torch.cat([self.buf, band], dim=-2)
        end = self.done
        while end < self.out_h and self.h1[end] < self.received:
            end += 1
        return end

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Output rows ``lo:hi`` (complete ones, not yet advanced past), (C, hi - lo, W_out)."""
        assert self.buf is not None and self.done <= lo <= hi
        rows = slice(lo, hi)
        top = self.buf[:, self.h0[rows] - self.buf_top]
        bottom = self.buf[:, self.h1[rows] - self.buf_top]
        w0, w1 = self.w0[rows, None].to(top.device), self.w1[rows, None].to(top.device)
        return top * w0 + bottom * w1

    def advance(self, end: int) -> None:
        """Forget the input rows that no output row from ``end`` on needs."""
        self.done = end
        keep = int(self.h0[end]) if end < self.out_h else self.received
        assert self.buf is not None
        self.buf = self.buf[:, min(keep, self.received) - self.buf_top :]
        self.buf_top = keep

    def push_all(self, band: torch.Tensor) -> torch.Tensor | None:
        """:meth:`push`, then every completed output row at once (None if none)."""
        lo, end = self.done, self.push(band)
        if end == lo:
            return None
        out = self.rows(lo, end)
        self.advance(end)
        return out


def resized_bands(
    bands: Iterator[Band], in_h: int, size: tuple[int, int], budget: int = 1 << 22
) -> Iterator[Band]:
    """Row bands of maps (each (C, n, W) or (n, W)) resampled bilinearly to ``size`` (H, W).

    Upsampling multiplies a band's rows: output bands are cut to about ``budget`` values each,
    so enlarging a model-scale band 8x does not hold 8x the band at once."""
    resizers: dict[str, BilinearRows] = {}
    for y0, maps in bands:
        if in_h == size[0] and all(m.shape[-1] == size[1] for m in maps.values()):
            yield y0, maps
            continue
        flat = {k: v.dim() == 2 for k, v in maps.items()}
        for key, value in maps.items():
            resizer = resizers.setdefault(key, BilinearRows(in_h, size[0], size[1]))
            end = resizer.push(value[None] if flat[key] else value)
        lo = next(iter(resizers.values())).done
        channels = sum(1 if flat[k] else int(v.shape[0]) for k, v in maps.items())
        step = max(1, budget // max(1, channels * size[1]))
        for a in range(lo, end, step):
            b = min(end, a + step)
            out = {k: r.rows(a, b) for k, r in resizers.items()}
            yield a, {k: v[0] if flat[k] else v for k, v in out.items()}
        for resizer in resizers.values():
            resizer.advance(end)


# ------------------------------------------------------------------ resampling an image


class ResampledRows:
    """A row source at another size: PIL's bilinear (antialiased when shrinking) resize, as
    ``axal.data.resample`` does for a whole image, computed for the rows asked for only.

    Each band is resized from the source rows under the filter's support (plus a margin), with
    PIL's ``box`` placing it exactly in the whole image; PIL clamps its filter at the band's
    edges only where they are the image's, so bands agree with the whole-image resize.
    """

    def __init__(self, source: RowSource, size: tuple[int, int]) -> None:
        self.source = source
        self.shape = (int(size[0]), int(size[1]))
        self.in_h, self.in_w = source.shape
        self.sy = self.in_h / self.shape[0]
        self.support = max(self.sy, 1.0)  # bilinear support 1, widened by the scale when shrinking

    def rows(self, y0: int, y1: int) -> np.ndarray:
        from PIL import Image

        if y1 <= y0:
            return np.zeros((0, self.shape[1]), np.float32)
        lo = max(0, int(math.floor(y0 * self.sy - self.support)) - 2)
        hi = min(self.in_h, int(math.ceil(y1 * self.sy + self.support)) + 2)
        band = np.ascontiguousarray(np.asarray(self.source.rows(lo, hi), dtype=np.float32))
        img = Image.fromarray(band)
        box = (0.0, y0 * self.sy - lo, float(self.in_w), y1 * self.sy - lo)
        out = img.resize((self.shape[1], y1 - y0), Image.Resampling.BILINEAR, box=box)
        return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def band_rows(width: int, budget: int = 1 << 22) -> int:
    """Rows per band for a width so that a band holds about ``budget`` pixels."""
    return max(1, budget // max(1, width))
