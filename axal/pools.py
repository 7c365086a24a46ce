"""The ActiveDataModule: labelled, unlabelled, test and validation pools of whole images.

Images stay whole in memory; training draws random augmented patches from the labelled pool,
evaluation and scoring see whole images. Each epoch has a fixed number of patches, so every
round (and every strategy) gets the same number of optimisation steps whatever the labelled
set's size: the training recipe does not depend on what the strategy picked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from axal.data import Sample
from axal.data.augment import sample_patch, train_transform

TASKS = {"myelin": 2, "axonmyelin": 3}


def task_mask(mask: np.ndarray, task: str) -> np.ndarray:
    """Class mask for a task: ``myelin`` is binary (the paper's), ``axonmyelin`` three classes."""
    if task == "myelin":
        return (mask == 1).astype(np.uint8)
    if task == "axonmyelin":
        return mask.astype(np.uint8)
    raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")


class PatchDataset(Dataset):
    """``length`` random augmented patches from the given images (uniform over images)."""

    def __init__(
        self,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        patch_size: int,
        length: int,
        augment: bool = True,
    ) -> None:
        self.images, self.masks, self.length = images, masks, length
        # drawn from torch's RNG, which the loop seeds each round
        seed = int(torch.randint(2**31 - 1, (1,)).item())
        self.transform = train_transform(patch_size, augment, seed=seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # global torch RNG, seeded by the loop each round: same seed, same patches
        i = int(torch.randint(len(self.images), (1,)).item())
        image, mask = sample_patch(self.transform, self.images[i], self.masks[i])
        return torch.from_numpy(image)[None], torch.from_numpy(mask)


class WholeImageDataset(Dataset):
    """Whole images with their masks and ids, for evaluation (batch size 1: sizes differ)."""

    def __init__(self, ids: list[str], images: dict[str, np.ndarray], masks: dict[str, np.ndarray]):
        self.ids, self.images, self.masks = ids, images, masks

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key = self.ids[index]
        return {
            "id": key,
            "image": torch.from_numpy(self.images[key])[None],
            "mask": torch.from_numpy(self.masks[key]),
        }


class ActiveDataModule(L.LightningDataModule):
    """Holds the pools and moves image ids from ``unlabelled`` to ``labelled``."""

    def __init__(
        self,
        samples: Iterable[Sample],
        splits: dict[str, list[str]],
        task: str = "myelin",
        patch_size: int = 256,
        patches_per_epoch: int = 64,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
        self.task, self.patch_size = task, patch_size
        self.patches_per_epoch, self.batch_size = patches_per_epoch, batch_size
        self.num_workers, self.augment = num_workers, augment
        samples = list(samples)
        self.samples = {s.id: s for s in samples}
        self.images = {s.id: s.image.astype(np.float32) for s in samples}
        self.masks = {s.id: task_mask(s.mask, task) for s in samples}
        unknown = [i for ids in splits.values() for i in ids if i not in self.samples]
        if unknown:
            raise ValueError(f"split names images that the dataset lacks: {unknown[:5]}")
        self.test = list(splits.get("test", []))
        self.val = list(splits.get("val", []))
        self.labelled = list(splits.get("initial", []))
        self.unlabelled = list(splits.get("pool", []))

    @property
    def n_classes(self) -> int:
        return TASKS[self.task]

    def label(self, ids: Iterable[str]) -> None:
        """Move ``ids`` from the unlabelled pool to the labelled set (the annotator's step)."""
        ids = list(ids)
        missing = [i for i in ids if i not in self.unlabelled]
        if missing:
            raise KeyError(f"not in the unlabelled pool: {missing}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate ids in {ids}")
        chosen = set(ids)
        self.unlabelled = [i for i in self.unlabelled if i not in chosen]
        self.labelled.extend(ids)

    def state_dict(self) -> dict[str, Any]:
        return {
            "labelled": list(self.labelled),
            "unlabelled": list(self.unlabelled),
            "test": list(self.test),
            "val": list(self.val),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        known = set(self.samples)
        for key in ("labelled", "unlabelled", "test", "val"):
            ids = list(state[key])
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise ValueError(f"saved pool {key!r} names images the dataset lacks: {unknown}")
            setattr(self, key, ids)

    def pool_images(self) -> dict[str, np.ndarray]:
        return {i: self.images[i] for i in self.unlabelled}

    def train_dataloader(self) -> DataLoader:
        if not self.labelled:
            raise ValueError("the labelled pool is empty: set al.initial >= 1")
        ds = PatchDataset(
            [self.images[i] for i in self.labelled],
            [self.masks[i] for i in self.labelled],
            self.patch_size,
            self.patches_per_epoch,
            self.augment,
        )
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _whole(self, ids: list[str]) -> DataLoader:
        ds = WholeImageDataset(ids, self.images, self.masks)
        return DataLoader(ds, batch_size=1, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._whole(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._whole(self.test)
