"""Training-patch sampling and augmentation: the only module that imports albumentations.

The paper augments with flips, small rotations, rescaling and brightness/contrast changes; a
random crop of ``patch_size`` is taken after the geometric transforms so borders stay filled.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np


def train_transform(patch_size: int, augment: bool = True, seed: int | None = None) -> A.Compose:
    """Random ``patch_size`` crop (padding small images), with the paper's augmentations.

    albumentations keeps its own RNG: ``seed`` makes the patches reproducible.
    """
    geometric = (
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(
                scale=(0.9, 1.1),
                rotate=(-10, 10),
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
    return A.Compose(
        [
            A.PadIfNeeded(patch_size, patch_size, border_mode=cv2.BORDER_REFLECT_101),
            *geometric,
            A.RandomCrop(patch_size, patch_size),
            *photometric,
        ],
        seed=seed,
    )


def sample_patch(
    transform: A.Compose, image: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` to an (H, W) float image in [0, 1] and its (H, W) class mask."""
    out = transform(image=image, mask=mask)
    return np.clip(out["image"], 0.0, 1.0).astype(np.float32), out["mask"].astype(np.int64)
