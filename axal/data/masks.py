"""Mask encodings: read a label file's grey values as classes, or refuse it, naming the file.

A mask whose values are misread does not fail: it trains and tests on the wrong classes, and
an empty test set even scores a perfect Dice. So every single-file mask (``mask.png`` of a
folder case, ``*_seg-axonmyelin-manual.png`` of a BIDS dataset) is checked on load against the
encodings axal knows (``dataset.mask_encoding``):

- ``axondeepseg``: 0 background, 127 (or 128) myelin, 255 axon, as AxonDeepSeg writes them.
  Anti-aliased masks (a few in-between values, e.g. 130 and 233 in
  ``sub-rat2_sample-data5_SEM``) go to the nearest class.
- ``binary``: a one-class mask, 0 / 255 (a few anti-aliased values allowed). With
  ``task=myelin`` 255 is myelin. With ``task=axonmyelin`` it is refused: one class cannot say
  which pixels are axon and which myelin (``mask_encoding=axondeepseg`` reads 255 as axon).
- ``index``: class indices 0 background, 1 myelin, 2 axon. Never guessed: a mask of 0/1/2 could
  as well be a nearly black picture, so it needs ``dataset.mask_encoding=index``.
- ``auto`` (default): ``axondeepseg`` or ``binary``, whichever the values fit; anything else
  (class indices, a 0..255 gradient, a photograph) is refused with the values found. All masks
  of one dataset must then fit the same encoding.

The separate binary ``*_seg-axon-manual.png`` / ``*_seg-myelin-manual.png`` masks of a BIDS
dataset are always read as ``binary``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from axal.domain import AXON, CLASS_NAMES, MYELIN

from .io import DataError, classes_from_axonmyelin

MASK_ENCODINGS = ("auto", "axondeepseg", "binary", "index")
SETTING = "dataset.mask_encoding"
# a mask is anti-aliased, not a gradient, when at most this share of pixels is off its values
MAX_OFF_SHARE = 0.10
# a 0/255 mask is one-class when myelin-level pixels (127, 128) are under this share of its
# foreground: anti-aliased edges of a binary mask may hit 127 or 128; myelin sheaths are a far
# larger share of an axon-myelin mask's foreground
MAX_MYELIN_SHARE_OF_BINARY = 0.05
_ADSG_VALUES = (0, 127, 128, 255)
_BINARY_VALUES = (0, 255)
_HELP = (
    "axal reads AxonDeepSeg masks (0 background, 127 myelin, 255 axon; a few anti-aliased "
    "in-between values are fine), one-class masks (0 / 255, myelin with task=myelin) and, with "
    f"{SETTING}=index, class indices (0 background, 1 myelin, 2 axon)"
)


def describe_values(raw: np.ndarray, limit: int = 8) -> str:
    """The values of a mask as a user can check them: ``0 (812 px), 1 (95 px)``, or a range."""
    counts = np.bincount(raw.ravel(), minlength=256) if raw.size else np.zeros(256, dtype=int)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return "no pixels"
    if len(present) <= limit:
        return ", ".join(f"{v} ({counts[v]} px)" for v in present)
    return f"{len(present)} distinct values from {present[0]} to {present[-1]}"


def _share_off(counts: np.ndarray, values: tuple[int, ...]) -> float:
    total = counts.sum()
    return float(total - counts[list(values)].sum()) / float(max(total, 1))


def detect_encoding(raw: np.ndarray) -> str | None:
    """The encoding a mask's values fit: ``empty``, ``index``, ``binary``, ``axondeepseg``.

    ``None`` when they fit none (e.g. a gradient). ``index`` is only reported, never assumed.
    """
    raw = np.asarray(raw)
    counts = np.bincount(raw.ravel(), minlength=256)
    present = set(np.flatnonzero(counts).tolist())
    if present <= {0}:
        return "empty"
    if present <= {0, 1, 2}:
        return "index"
    if _share_off(counts, _ADSG_VALUES) > MAX_OFF_SHARE:
        return None
    myelin_level = int(counts[127] + counts[128])
    if counts[255] and myelin_level <= MAX_MYELIN_SHARE_OF_BINARY * (myelin_level + counts[255]):
        return "binary"
    return "axondeepseg"


def _refuse(path: Path | str, raw: np.ndarray, why: str) -> DataError:
    return DataError(f"mask {path}: {why}; values found: {describe_values(raw)}. {_HELP}.")


def _one_class_for_axonmyelin(path: Path | str) -> DataError:
    return DataError(
        f"mask {path} is a one-class mask (0 / 255): with task=axonmyelin it cannot say which "
        f"pixels are axon and which are myelin. Use task=myelin (255 = myelin), give masks with "
        f"0 / 127 / 255 (background / myelin / axon), or set {SETTING}=axondeepseg to read "
        f"255 as axon"
    )


def decode_mask(
    raw: np.ndarray, path: Path | str, encoding: str = "auto", task: str | None = "myelin"
) -> tuple[np.ndarray, str]:
    """Classes (uint8: 0 background / 1 myelin / 2 axon) of one mask file, and its encoding.

    Raises DataError naming the file and the values found when they fit no known encoding.
    """
    check_encoding(encoding)
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise DataError(f"mask {path} must be 2-D, got shape {raw.shape}")
    found = detect_encoding(raw)
    if encoding == "index":
        if found not in ("index", "empty"):
            raise _refuse(path, raw, f"{SETTING}=index needs class indices 0, 1, 2")
        return raw.astype(np.uint8), "index"
    if found == "empty":
        return np.zeros(raw.shape, dtype=np.uint8), "empty"
    if found == "index":
        raise DataError(
            f"mask {path} holds only small values ({describe_values(raw)}): class indices, or a "
            f"mask saved almost black. If 0 is background, 1 myelin and 2 axon, set "
            f"{SETTING}=index; otherwise save it as 0 / 127 / 255 (background / myelin / axon)"
        )
    if found is None:
        raise _refuse(path, raw, "not a known mask encoding (too many in-between values)")
    if encoding == "binary" or (encoding == "auto" and found == "binary"):
        if _share_off(np.bincount(raw.ravel(), minlength=256), _BINARY_VALUES) > MAX_OFF_SHARE:
            raise _refuse(path, raw, f"{SETTING}=binary needs 0 / 255")
        if task == "axonmyelin":
            raise _one_class_for_axonmyelin(path)
        return np.where(raw >= 128, MYELIN, 0).astype(np.uint8), "binary"
    return classes_from_axonmyelin(raw), "axondeepseg"


def check_binary(raw: np.ndarray, path: Path | str) -> None:
    """Refuse a separate one-class mask (``_seg-axon-`` / ``_seg-myelin-manual``) not 0 / 255."""
    raw = np.asarray(raw)
    found = detect_encoding(raw)
    if found == "empty":
        return
    counts = np.bincount(raw.ravel(), minlength=256)
    if found == "index" or _share_off(counts, _BINARY_VALUES) > MAX_OFF_SHARE:
        raise _refuse(path, raw, "a separate axon or myelin mask must be binary, 0 / 255")


def check_encoding(encoding: str) -> None:
    if encoding not in MASK_ENCODINGS:
        raise DataError(f"{SETTING}={encoding!r} is not one of {', '.join(MASK_ENCODINGS)}")


def check_same_encoding(found: Mapping[str, str]) -> None:
    """All masks of a dataset in one encoding (``found``: file -> encoding), else DataError."""
    by_encoding: dict[str, str] = {}
    for path, encoding in found.items():
        if encoding != "empty":
            by_encoding.setdefault(encoding, path)
    if len(by_encoding) > 1:
        examples = "; ".join(f"{p} reads as {e}" for e, p in sorted(by_encoding.items()))
        raise DataError(
            f"the masks of this dataset do not share one encoding ({examples}). A 0 / 255 mask "
            f"among 0 / 127 / 255 ones is probably an image without myelin or a mask of "
            f"another kind: set {SETTING}=axondeepseg or {SETTING}=binary to decide, or fix "
            f"the odd masks"
        )


def check_foreground(
    masks: Mapping[str, np.ndarray], ids: Iterable[str], task: str, what: str = "test"
) -> None:
    """Refuse an evaluation set with no pixels of a class: its Dice would say nothing.

    ``masks`` are task masks (``axal.pools.task_mask``). With no myelin in the ground truth, a
    model that predicts no myelin scores a perfect Dice of 1: an error, not a result.
    """
    ids = list(ids)
    if not ids:
        return
    classes = [MYELIN] if task == "myelin" else [MYELIN, AXON]
    for c in classes:
        if not any(np.any(masks[i] == c) for i in ids):
            raise DataError(
                f"the {what} images ({len(ids)}: {', '.join(ids[:4])}"
                f"{', ...' if len(ids) > 4 else ''}) hold no {CLASS_NAMES[c]} pixels with "
                f"task={task}, so their Dice would be meaningless (predicting nothing scores 1). "
                f"Check that the masks hold {CLASS_NAMES[c]} ({SETTING}), or hold out other "
                f"subjects (seed, dataset.test_subjects)"
            )
