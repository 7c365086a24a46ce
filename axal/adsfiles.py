"""AxonDeepSeg's file names and values, so that axal's files open in the tools annotators use.

Predicted masks, as AxonDeepSeg's ``segment`` writes them, 8-bit grey at the image's own size:
``<stem>_seg-axonmyelin.png`` (0 background, 127 myelin, 255 axon), ``<stem>_seg-axon.png`` and
``<stem>_seg-myelin.png`` (0 / 255). Manual masks that an annotator adds: ``<case>/mask.png``
in the legacy layout (same values as ``_seg-axonmyelin``), and in BIDS
``derivatives/labels/<sub>/[<ses>/]micr/<stem>_seg-axonmyelin-manual.png`` (or the pair
``_seg-axon-manual`` + ``_seg-myelin-manual``, 0 / 255).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from axal.atomic import atomic_write
from axal.data.io import DataError
from axal.data.sources import BIDS_IMAGE_RE, IMAGE_SUFFIXES, bids_pixel_size, find_named
from axal.domain import AXON, MYELIN, SEG_KINDS

AXONMYELIN_GREY = {MYELIN: 127, AXON: 255}  # class -> grey value in _seg-axonmyelin files
# grey values an annotator's mask may hold; a few anti-aliased pixels in between are fine


def image_stem(path: str | Path) -> str:
    """File name without its image suffix: ``image`` for ``image.png``, the BIDS stem else."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def prediction_paths(folder: Path, stem: str) -> dict[str, Path]:
    """Where the three predicted masks of image ``stem`` go in ``folder``."""
    return {kind: folder / f"{stem}_seg-{kind}.png" for kind in SEG_KINDS}


def encode(classes: np.ndarray) -> dict[str, np.ndarray]:
    """A class map (0 background, 1 myelin, 2 axon) as the three AxonDeepSeg grey images."""
    axonmyelin = np.zeros(classes.shape, dtype=np.uint8)
    for cls, grey in AXONMYELIN_GREY.items():
        axonmyelin[classes == cls] = grey
    return {
        "axonmyelin": axonmyelin,
        "axon": np.where(classes == AXON, 255, 0).astype(np.uint8),
        "myelin": np.where(classes == MYELIN, 255, 0).astype(np.uint8),
    }


def write_png(path: Path, grey: np.ndarray) -> Path:
    """An 8-bit grey PNG, written atomically."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L").save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


# the masks a model of each task predicts: a myelin model says nothing about axons, so it
# writes no (all-zero) _seg-axon.png
TASK_KINDS = {"axonmyelin": ("axonmyelin", "axon", "myelin"), "myelin": ("myelin",)}


def write_prediction(
    classes: np.ndarray, folder: Path, stem: str, task: str = "axonmyelin"
) -> dict[str, Path]:
    """Write a class map as the AxonDeepSeg masks a model of ``task`` predicts; returns their
    paths by kind."""
    paths = prediction_paths(folder, stem)
    kinds = TASK_KINDS.get(task, tuple(paths))
    for kind, grey in encode(classes).items():
        if kind in kinds:
            write_png(paths[kind], grey)
    return {k: p for k, p in paths.items() if k in kinds}


class MaskWriter:
    """AxonDeepSeg's masks of a class map that arrives in row bands: each PNG is written band
    by band (:mod:`axal.pngstream`), so no full-size map is held. ``paths``: kind -> file;
    every file appears (atomically) on :meth:`close`, none if a band fails."""

    def __init__(self, paths: dict[str, Path], size: tuple[int, int]) -> None:
        from axal.pngstream import GreyPngWriter

        self.paths = dict(paths)
        self.writers: dict[str, GreyPngWriter] = {}
        try:
            for kind, path in self.paths.items():
                self.writers[kind] = GreyPngWriter(path, size[0], size[1])
        except BaseException:
            self.abort()
            raise

    def write(self, classes: np.ndarray) -> None:
        """The next rows of the class map (0 background, 1 myelin, 2 axon)."""
        for kind, grey in encode(classes).items():
            if kind in self.writers:
                self.writers[kind].write(grey)

    def close(self) -> dict[str, Path]:
        """Finish every file; returns their paths by kind (``digests``: their SHA-256)."""
        try:
            for writer in self.writers.values():
                writer.close()
        except BaseException:
            self.abort()
            raise
        self.digests = {k: w.digest for k, w in self.writers.items()}
        return self.paths

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def task_paths(folder: Path, stem: str, task: str = "axonmyelin") -> dict[str, Path]:
    """The predicted masks a model of ``task`` writes, by kind (see :data:`TASK_KINDS`)."""
    paths = prediction_paths(folder, stem)
    kinds = TASK_KINDS.get(task, tuple(paths))
    return {k: p for k, p in paths.items() if k in kinds}


def kept_paths(folder: Path, stem: str, ledger: dict[str, str], base: Path, tag: str):
    """Where the three masks go without writing over a file a person may have edited: a file
    that exists and is not what axal wrote there (by ``ledger``, see
    :func:`write_prediction_kept`) is kept, and the new mask goes beside it, tagged."""
    out = {}
    for kind, path in prediction_paths(folder, stem).items():
        if path.is_file() and ledger.get(ledger_key(path, base)) != file_digest(path):
            path = path.with_name(f"{stem}_seg-{kind}.{tag}.png")
        out[kind] = path
    return out


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_prediction_kept(
    classes: np.ndarray, folder: Path, stem: str, ledger: dict[str, str], base: Path, tag: str
) -> dict[str, Path]:
    """Write the three masks, but never over a file a person may have edited.

    ``ledger`` maps each file axal wrote (relative to ``base``) to the SHA-256 of what it wrote.
    A file that exists and is not what axal wrote there (edited, or put there by someone else)
    is kept, and the new mask goes beside it as ``<stem>_seg-<kind>.<tag>.png``. The ledger is
    updated in place; the caller saves it. (annotate streams the same through
    :func:`kept_paths` and :class:`MaskWriter` band by band.)
    """
    paths = kept_paths(folder, stem, ledger, base, tag)
    writer = MaskWriter(paths, classes.shape)
    try:
        writer.write(classes)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    for kind, path in paths.items():
        ledger[ledger_key(path, base)] = writer.digests[kind]
    return paths


def ledger_key(path: Path, base: Path) -> str:
    """A file's ledger key: its path relative to ``base`` (``../`` for files beside images)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


# ------------------------------------------------------------------ manual masks


def bids_label_folder(root: Path, image_path: Path) -> Path:
    return root / "derivatives" / "labels" / image_path.parent.relative_to(root)


def manual_masks(root: Path, image_path: str | Path) -> dict[str, Path]:
    """The manual mask files of an image, by kind (``axonmyelin``, or ``axon`` + ``myelin``).

    Legacy layout: ``<case>/mask.*`` (kind ``axonmyelin``); BIDS: the derivatives' labels.
    Empty when the image has none.
    """
    image_path = Path(image_path)
    if image_stem(image_path) == "image":
        found = find_named(image_path.parent, "mask")
        return {"axonmyelin": found} if found else {}
    folder, stem = bids_label_folder(root, image_path), image_stem(image_path)
    out = {kind: find_named(folder, f"{stem}_seg-{kind}-manual") for kind in SEG_KINDS}
    if out["axonmyelin"] is not None:
        return {"axonmyelin": out["axonmyelin"]}
    return {k: p for k, p in out.items() if p is not None and k != "axonmyelin"}


def mask_target(root: Path, image_path: str | Path) -> Path:
    """Where an annotator saves the mask of an image so that axal reads it."""
    image_path = Path(image_path)
    if image_stem(image_path) == "image":
        return image_path.parent / "mask.png"
    stem = image_stem(image_path)
    return bids_label_folder(root, image_path) / f"{stem}_seg-axonmyelin-manual.png"


def file_hash(paths: list[Path]) -> str:
    """A short digest of files' bytes: tells a changed mask from an unchanged one."""
    h = hashlib.sha1()
    for path in sorted(paths):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def pixel_size_of(image_path: str | Path) -> float | None:
    """The pixel size (um) that the files beside an image give, read as the dataset loaders
    read them: ``pixel_size_in_micrometer.txt`` (legacy) or the BIDS sidecars."""
    image_path = Path(image_path)
    text_file = image_path.parent / "pixel_size_in_micrometer.txt"
    if text_file.is_file():
        text = text_file.read_text().strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise DataError(f"{text_file} must hold one positive number (um per pixel): {text!r}")
        return value
    stem = image_stem(image_path)
    match = BIDS_IMAGE_RE.match(stem)
    if match is None or image_path.parent.name != "micr":
        return None
    subject_dir = image_path.parent.parent
    if subject_dir.name.startswith("ses-"):
        subject_dir = subject_dir.parent
    return bids_pixel_size(
        image_path, stem, match["subject"], match["modality"], subject_dir.parent
    )
