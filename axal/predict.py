"""A trained checkpoint -> AxonDeepSeg masks for any images (``predict.py``, and ``annotate``).

Each image is resampled to the pixel size the model was trained at (when both are known), run
through the network by sliding windows, and its class probabilities are resampled back
(bilinear) to the image's own size before the argmax, so the masks align pixel for pixel with
the image. With ``mc_samples`` > 0 an uncertainty map is written too:
``<stem>_uncertainty.png``, the predictive entropy of the MC-dropout mean, 0 = certain,
255 = ln(C) (every class equally likely). One image that cannot be read or segmented is
reported by name; the others are still predicted.

Everything streams in row bands (:mod:`axal.streaming`, docs/large-images.md): the image is
normalised, resampled, segmented and written as PNG rows a band at a time, so a 20,000 px
mosaic costs its decoded file (1 byte per pixel for 8-bit grey) and a band of windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from axal.acquisition import image_seed
from axal.adsfiles import MaskWriter, image_stem, pixel_size_of, task_paths
from axal.checkpoint import CheckpointError, load_model
from axal.data.io import (
    BANDED_RESAMPLE_PIXELS,
    DataError,
    ImageRows,
    Sample,
    resample,
    resampled_size,
)
from axal.data.sources import IMAGE_SUFFIXES, bids_images, is_axal_output, is_bids
from axal.mc_dropout import StatBands, check_mc_capable, eval_mode, split_stages
from axal.pngstream import GreyPngWriter
from axal.round_acquisition import mc_batch
from axal.streaming import ArrayRows, ResampledRows, RowSource, as_rows, resized_bands
from axal.tiling import sliding_window_bands

log = logging.getLogger("axal")
UNCERTAINTY = "uncertainty"


def to_model_scale(
    image: np.ndarray,
    pixel_size: float | None,
    model_pixel_size: float | None,
    path: str | Path = "",
) -> np.ndarray:
    """The image at the model's pixel size; unchanged when either size is unknown."""
    if pixel_size is None or model_pixel_size is None:
        return image
    return resample(Sample("", "", image, None, pixel_size, str(path)), model_pixel_size).image


def model_scale_rows(
    source: RowSource,
    pixel_size: float | None,
    model_pixel_size: float | None,
    path: str | Path = "",
) -> RowSource:
    """A row source at the model's pixel size (resampled band by band, as
    :func:`to_model_scale` does whole); the source itself when either size is unknown."""
    if pixel_size is None or model_pixel_size is None:
        return source
    if math.isclose(pixel_size, float(model_pixel_size), rel_tol=1e-9):
        return source
    size = resampled_size(source.shape, pixel_size, float(model_pixel_size), path)
    if size == tuple(source.shape):
        return source
    if max(size[0] * size[1], source.shape[0] * source.shape[1]) <= BANDED_RESAMPLE_PIXELS:
        whole = source.rows(0, source.shape[0])  # small: PIL's whole-image resize, as before
        return ArrayRows(to_model_scale(whole, pixel_size, model_pixel_size, path))
    return ResampledRows(source, size)


def segment_bands(
    model: L.LightningModule, image: np.ndarray | RowSource, size: tuple[int, int]
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 class rows) of an image at the model's scale, resampled (bilinear
    probabilities) to ``size`` (H, W), in row bands top down: sliding windows stream through
    ``axal.streaming``, so memory is one band of windows, not the image's class maps."""
    source = as_rows(image)
    hp = model.hparams

    def probabilities(tiles: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(tiles), dim=1)

    bands = sliding_window_bands(
        probabilities,
        source,
        patch=hp.patch_size,
        overlap=hp.overlap,
        batch_size=hp.eval_batch_size,
        device=model.device,
        mode=torch.inference_mode,
        dtype=torch.float32,
    )
    with eval_mode(model):
        named = ((y0, {"p": band}) for y0, band in bands)
        for y0, maps in resized_bands(named, source.shape[0], size):
            yield y0, classes_of_probabilities(maps["p"]).cpu().numpy()


def classes_of_probabilities(p: torch.Tensor) -> torch.Tensor:
    """``p.argmax(0)`` as uint8 (the first of equal maxima), by one elementwise pass per
    class: on CPU several times faster than an argmax over the leading dimension."""
    best = p[0]
    out = torch.zeros(p.shape[1:], dtype=torch.uint8, device=p.device)
    for c in range(1, p.shape[0]):
        out.masked_fill_(p[c] > best, c)
        best = torch.maximum(best, p[c])
    return out


def segment(
    model: L.LightningModule, image: np.ndarray | RowSource, size: tuple[int, int]
) -> np.ndarray:
    """Class map (uint8) of an image at the model's scale, resampled to ``size`` (H, W)."""
    out = np.empty(size, dtype=np.uint8)
    for y0, rows in segment_bands(model, image, size):
        out[y0 : y0 + rows.shape[0]] = rows
    return out


def uncertainty_bands(
    model: L.LightningModule,
    image: np.ndarray | RowSource,
    size: tuple[int, int],
    mc_samples: int,
    seed: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Predictive entropy of the MC-dropout mean as 8-bit grey (255 = ln(C)) in row bands;
    per-tile statistics are blended band by band, so only the entropy of one band is held."""
    from tqdm.auto import tqdm

    tile_batch, sample_chunk = mc_batch(model.device, None, None)
    patch, overlap = int(model.hparams.patch_size), int(model.hparams.overlap)
    try:
        check_mc_capable(model.net)
    except ValueError as err:  # a network without dropout
        raise CheckpointError(f"mc_samples={mc_samples} needs MC dropout: {err}") from err
    prefix, suffix = split_stages(model.net)
    bands = StatBands(
        prefix, suffix, as_rows(image), mc_samples, patch, overlap, tile_batch, sample_chunk,
        seed, model.device, 32, keys=("entropy",), modes=model.net,
    )  # fmt: skip
    # one tick per tile and sample: the bar's rate gives the time left on a long MC run
    total = len(bands.win.coords) * mc_samples
    bar = tqdm(total=total, desc="MC samples x tiles", unit="pass", leave=False)
    bands.on_suffix_batch = bar.update
    top = math.log(int(model.hparams.n_classes))
    try:
        named = iter(bands)
        for y0, maps in resized_bands(named, bands.height, size):
            entropy = maps["entropy"].numpy()
            yield y0, np.clip(np.rint(entropy / top * 255), 0, 255).astype(np.uint8)
    finally:
        bar.close()


def uncertainty_map(
    model: L.LightningModule,
    image: np.ndarray | RowSource,
    size: tuple[int, int],
    mc_samples: int,
    seed: int,
) -> np.ndarray:
    """Predictive entropy of the MC-dropout mean as 8-bit grey: 255 = ln(C)."""
    out = np.empty(size, dtype=np.uint8)
    for y0, rows in uncertainty_bands(model, image, size, mc_samples, seed):
        out[y0 : y0 + rows.shape[0]] = rows
    return out


def write_bands(bands: Iterator[tuple[int, np.ndarray]], writer: Any, keep: bool = False):
    """Feed row bands to a writer (``write(rows)``, ``close()``, ``abort()``); with ``keep``,
    also return the whole map (morphometrics need it), else None."""
    kept = []
    try:
        for _, rows in bands:
            writer.write(rows)
            if keep:
                kept.append(rows)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return np.concatenate(kept) if keep else None


def find_images(source: str | Path) -> tuple[list[Path], Path]:
    """(images, the folder their outputs are placed relative to) of a file or a folder.

    A folder is read as BIDS (``sub-*/micr/``), as the legacy layout (``<case>/image.png``)
    or as a flat folder of images; masks and earlier predictions are never taken for images.
    """
    source = Path(source).expanduser()
    if source.is_file():
        return [source], source.parent
    if not source.is_dir():
        raise DataError(f"input={source}: no such image or folder")
    if is_bids(source):
        return bids_images(source), source
    cases = sorted(
        p
        for case in source.iterdir()
        if case.is_dir() and not is_axal_output(case / "image.png", source)
        for p in case.iterdir()
        if p.is_file() and image_stem(p) == "image" and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if cases:
        return cases, source
    flat = sorted(
        p
        for p in source.iterdir()
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not is_axal_output(p, source)
        and image_stem(p) != "mask"
    )
    if not flat:
        raise DataError(
            f"input={source}: no image found (BIDS sub-*/micr/*.png, <case>/image.png, or "
            "*.png / *.tif in the folder itself)"
        )
    return flat, source


@dataclass
class Predictions:
    """What a predict call wrote (image -> files) and what failed (image -> why)."""

    written: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def predict_image(
    model: L.LightningModule,
    meta: dict,
    path: Path,
    folder: Path,
    mc_samples: int = 0,
    pixel_size: float | None = None,
    seed: int = 0,
    morphometrics: bool = False,
) -> list[Path]:
    """Segment one image file into AxonDeepSeg's masks (and its uncertainty) in ``folder``;
    with ``morphometrics``, ``<stem>_axon_morphometrics.csv`` (per fiber) and its
    ``_aggregate.csv`` (one row) beside them."""
    image = ImageRows(path)  # decoded once; normalised to float a band at a time
    size = image.shape
    own = pixel_size if pixel_size is not None else pixel_size_of(path)
    model_size = meta.get("pixel_size")
    if model_size is not None and own is None:  # the wrong scale gives wrong masks, silently
        raise DataError(
            f"{path}: pixel size unknown (no pixel_size_in_micrometer.txt or BIDS sidecar JSON) "
            f"and the model was trained at {model_size} um/px: add the file, or set "
            "pixel_size=<um per pixel> for the images"
        )
    if morphometrics and own is None:
        raise DataError(
            f"{path}: pixel size unknown, morphometrics need micrometres per pixel (add "
            "pixel_size_in_micrometer.txt or a sidecar JSON, or set pixel_size=...)"
        )
    scaled = model_scale_rows(image, own, model_size, path)
    stem = image_stem(path)
    task = str(meta.get("task") or "axonmyelin")
    paths = task_paths(folder, stem, task)
    # masks are written band by band; only morphometrics (fibers) need the whole class map
    classes = write_bands(
        segment_bands(model, scaled, size), MaskWriter(paths, size), morphometrics
    )
    files = list(paths.values())
    if morphometrics:
        from axal.morphometrics import aggregate, fiber_table, write_csv

        rows = fiber_table(classes, own)
        table = folder / f"{stem}_axon_morphometrics.csv"
        write_csv(table, rows, aggregate(classes, own, rows), image=path.name)
        files += [table, table.with_name(table.stem + "_aggregate.csv")]
    if mc_samples:
        target = folder / f"{stem}_{UNCERTAINTY}.png"
        grey = uncertainty_bands(model, scaled, size, mc_samples, image_seed(seed, stem))
        write_bands(grey, GreyPngWriter(target, *size))
        files.append(target)
    return files


def predict(
    ckpt: str | Path,
    source: str | Path,
    out: str | Path | None = None,
    mc_samples: int = 0,
    task: str | None = None,
    pixel_size: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    morphometrics: bool = False,
) -> Predictions:
    """Masks for every image of ``source`` (a file or folder) from checkpoint ``ckpt``.

    ``out``: a folder that mirrors the input's layout; by default the masks go beside each
    image, as AxonDeepSeg writes them. ``task``: refuse a checkpoint of another task.
    """
    if mc_samples < 0:
        raise ValueError(f"mc_samples={mc_samples} must be >= 0")
    model, meta = load_model(ckpt, task)
    if morphometrics and meta["task"] != "axonmyelin":
        raise CheckpointError(
            f"morphometrics=true needs an axon+myelin model, but {ckpt} was trained with "
            f"task={meta['task']} (no axon class): train one with task=axonmyelin"
        )
    model.to(device)
    from tqdm.auto import tqdm

    images, base = find_images(source)
    result = Predictions()
    for path in tqdm(images, desc="predict", unit="image"):  # with the time left
        folder = path.parent if out is None else Path(out) / path.parent.relative_to(base)
        try:
            files = predict_image(
                model, meta, path, folder, mc_samples, pixel_size, seed, morphometrics
            )
        except (DataError, OSError, RuntimeError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise  # the model, not the image: every image would fail alike
            message = str(err) if str(path) in str(err) else f"{path}: {err}"
            log.error("%s", message)
            result.failed[str(path)] = message
            continue
        result.written[str(path)] = [str(f) for f in files]
        log.info("%s -> %s", path, files[0])
    return result
