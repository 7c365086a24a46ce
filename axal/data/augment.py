"""Training-patch sampling and augmentation: the only module that imports albumentations.

The paper augments with flips, small rotations, rescaling and brightness/contrast changes. A
patch is drawn as a window around a uniformly placed centre, a little larger than the patch so
that a rotated or rescaled patch is still filled with tissue, then transformed and centre-cropped.
The geometric transforms therefore touch ~2x the patch's pixels, not the whole image: on a
2000 x 2000 SEM image this is what keeps patch sampling well below the cost of a training step.
"""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np

MAX_ROTATION, MIN_SCALE = 10.0, 0.9
# OpenCV's own thread pool (all cores per process) only adds contention on patch-sized
# arrays, and many sweep jobs in parallel made it oversubscribe a 16-core machine 14x
cv2.setNumThreads(0)


def window_size(patch_size: int, augment: bool = True) -> int:
    """Side of the window that still fills a patch after the largest rotation and zoom-out."""
    if not augment:
        return patch_size
    angle = math.radians(MAX_ROTATION)
    return math.ceil(patch_size * (math.cos(angle) + math.sin(angle)) / MIN_SCALE) + 2


def train_transform(patch_size: int, augment: bool = True, seed: int | None = None) -> A.Compose:
    """The paper's augmentations on a window, then the central ``patch_size`` crop.

    albumentations keeps its own RNG: ``seed`` makes the patches reproducible.
    """
    geometric = (
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                scale=(MIN_SCALE, 1.1),
                rotate=(-MAX_ROTATION, MAX_ROTATION),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.7,
            ),
        ]
        if augment
        else []
    )
    photometric = [A.RandomBrightnessContrast(0.2, 0.2, p=0.7)] if augment else []
    return A.Compose([*geometric, A.CenterCrop(patch_size, patch_size), *photometric], seed=seed)


def strong_transform(seed: int | None = None) -> A.Compose:
    """The student's strong view of a teacher's (weak) patch: intensity, contrast, gamma, noise
    and blur only. Nothing geometric, so pixel (i, j) of both views is the same tissue and the
    teacher's prediction there is a target for the student's (axal.mean_teacher)."""
    return A.Compose(
        [
            A.RandomBrightnessContrast(0.4, 0.4, p=0.8),
            A.RandomGamma((70, 150), p=0.5),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.5), p=0.5),
        ],
        seed=seed,
    )


def strong_view(transform: A.Compose, patch: np.ndarray) -> np.ndarray:
    """The strong view of an (H, W) float patch in [0, 1], same shape and range."""
    return np.clip(transform(image=patch)["image"], 0.0, 1.0).astype(np.float32)


def _mirrored(start: int, size: int, n: int) -> np.ndarray:
    """Indices start..start+size-1 mirrored into [0, n) (OpenCV's BORDER_REFLECT_101)."""
    idx = np.arange(start, start + size)
    if n == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def crop_window(
    array: np.ndarray, cy: int, cx: int, size: int, pad_value: int | float | None = None
) -> np.ndarray:
    """The ``size`` x ``size`` window of an (H, W) array centred on (cy, cx).

    Outside the array the image is mirrored (BORDER_REFLECT_101), or filled with ``pad_value``
    (e.g. the ignore label of a mask).
    """
    h, w = array.shape[:2]
    y0, x0 = cy - size // 2, cx - size // 2
    if 0 <= y0 and y0 + size <= h and 0 <= x0 and x0 + size <= w:
        return np.ascontiguousarray(array[y0 : y0 + size, x0 : x0 + size])
    out = array[np.ix_(_mirrored(y0, size, h), _mirrored(x0, size, w))]
    if pad_value is not None:
        ys, xs = np.arange(y0, y0 + size), np.arange(x0, x0 + size)
        outside = ((ys < 0) | (ys >= h))[:, None] | ((xs < 0) | (xs >= w))[None, :]
        out[outside] = pad_value
    return out


def sample_patch(
    transform: A.Compose,
    image: np.ndarray,
    mask: np.ndarray,
    centre: tuple[int, int],
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Transform the window of an (H, W) float image in [0, 1] and its class mask at ``centre``."""
    cy, cx = centre
    out = transform(
        image=crop_window(image, cy, cx, window), mask=crop_window(mask, cy, cx, window)
    )
    return np.clip(out["image"], 0.0, 1.0).astype(np.float32), out["mask"].astype(np.int64)
