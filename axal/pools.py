"""The ActiveDataModule: labelled, unlabelled, test and validation pools of annotation units.

A unit is what an annotator labels in one go: a whole image (``al.unit=image``, the paper's) or
a tile of one (``al.unit=tile``; non-overlapping ``tile_size`` boxes, edge tiles smaller). A
unit's id is its image id, or ``"<image id>@x,y,w,h"`` for a tile (:mod:`axal.domain`). This
module maps ids to boxes and turns the labelled units into per-pixel loss masks: pixels outside
every labelled box carry ``IGNORE`` and never reach the loss, although they still feed the
network as context.

Images stay whole in memory; training draws random augmented patches centred in labelled units
(uniform over units), evaluation and scoring see whole images. A round trains for a fixed
number of optimizer steps (``steps`` batches), so the training recipe does not depend on what
a strategy picked, nor on how many units are labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from axal.data import Sample
from axal.data.augment import (
    sample_patch,
    strong_transform,
    strong_view,
    train_transform,
    window_size,
)
from axal.domain import TASKS, UNIT_KINDS, format_unit_id, parse_unit_id

IGNORE = 255  # label of pixels that are not (yet) annotated


def task_mask(mask: np.ndarray, task: str) -> np.ndarray:
    """Class mask for a task: ``myelin`` is binary (the paper's), ``axonmyelin`` three classes."""
    if task == "myelin":
        return (mask == 1).astype(np.uint8)
    if task == "axonmyelin":
        return mask.astype(np.uint8)
    raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")


@dataclass(frozen=True)
class Unit:
    """An annotation unit: the box (x, y, w, h) of image ``image``; ``whole`` for unit=image."""

    image: str
    x: int
    y: int
    w: int
    h: int
    whole: bool = False

    @property
    def id(self) -> str:
        return format_unit_id(self.image, None if self.whole else (self.x, self.y, self.w, self.h))

    @property
    def pixels(self) -> int:
        return self.w * self.h

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    @classmethod
    def parse(cls, unit_id: str, shapes: Mapping[str, tuple[int, int]]) -> Unit:
        """The unit of an id; ``shapes`` (image id -> (H, W)) resolves whole-image ids."""
        if unit_id in shapes:
            h, w = shapes[unit_id]
            return cls(unit_id, 0, 0, w, h, whole=True)
        image, box = parse_unit_id(unit_id)
        if box is None:
            raise ValueError(f"unit id {unit_id!r} is neither an image id nor image@x,y,w,h")
        if image not in shapes:
            raise ValueError(f"unit id {unit_id!r} names an image the dataset lacks")
        return cls(image, *box)


def image_units(image_id: str, shape: tuple[int, int], unit: str, tile_size: int | None) -> list:
    """The units of one image: itself, or its non-overlapping tiles (row-major).

    Where the tile size does not divide the image, an edge strip narrower than half a tile
    (an 8 px sliver, too small to annotate usefully) joins its neighbour, which grows up to
    1.5 tiles; a wider strip is a smaller edge tile of its own.
    """
    h, w = shape
    if unit == "image":
        return [Unit(image_id, 0, 0, w, h, whole=True)]
    if unit != "tile":
        raise ValueError(f"al.unit={unit!r} is not one of {', '.join(UNIT_KINDS)}")
    if not tile_size or tile_size < 1:
        raise ValueError(f"al.tile_size={tile_size!r} must be a positive number of pixels")
    ys, xs = _tile_edges(h, tile_size), _tile_edges(w, tile_size)
    return [
        Unit(image_id, x0, y0, x1 - x0, y1 - y0)
        for y0, y1 in zip(ys, ys[1:])
        for x0, x1 in zip(xs, xs[1:])
    ]


def _tile_edges(size: int, tile: int) -> list[int]:
    """Tile borders along one axis: every ``tile`` px, a last strip under half a tile merged."""
    edges = list(range(0, size, tile)) + [size]
    if len(edges) > 2 and size - edges[-2] < tile / 2:
        del edges[-2]
    return edges


def unit_splits(
    image_splits: Mapping[str, list[str]],
    shapes: Mapping[str, tuple[int, int]],
    unit: str,
    tile_size: int | None,
    n_initial: int,
    seed: int,
) -> dict[str, list[str]]:
    """Image-level splits -> unit-level ones: test/val stay images, training images become units.

    For ``unit=image`` this is the identity. For tiles, ``n_initial`` random tiles of the
    training images (seeded) start labelled and every other tile is the pool.
    """
    if unit == "image":
        return {k: list(v) for k, v in image_splits.items()}
    train = sorted(image_splits["initial"]) + sorted(image_splits["pool"])
    units = [u.id for i in sorted(train) for u in image_units(i, shapes[i], unit, tile_size)]
    if not 1 <= n_initial <= len(units):
        raise ValueError(f"al.initial={n_initial} must be in [1, {len(units)}] tiles")
    rng = np.random.default_rng([int(seed), 7])
    chosen = set(rng.choice(len(units), size=n_initial, replace=False).tolist())
    return {
        "test": list(image_splits["test"]),
        "val": list(image_splits["val"]),
        "initial": [u for j, u in enumerate(units) if j in chosen],
        "pool": [u for j, u in enumerate(units) if j not in chosen],
    }


class PatchDataset(Dataset):
    """``length`` random augmented patches centred in the given units (uniform over units).

    ``regions`` are (image, loss mask, unit) triples. Item ``i`` is a pure function of the
    dataset's seed and ``i`` (its own generator, and albumentations reseeded per item), so the
    patches are the same with or without loader workers.
    """

    def __init__(
        self,
        regions: list[tuple[np.ndarray, np.ndarray, Unit]],
        patch_size: int,
        length: int,
        augment: bool = True,
        seed: int | None = None,
    ) -> None:
        if not regions:
            raise ValueError("no labelled unit to draw training patches from")
        self.regions, self.length, self.patch_size = regions, length, patch_size
        self.window = window_size(patch_size, augment)
        self.augment = augment
        # by default drawn from torch's RNG, which the loop seeds each round
        self.reseed(int(torch.randint(2**31 - 1, (1,)).item()) if seed is None else int(seed))

    def reseed(self, seed: int) -> None:
        """Draw the patches of ``seed`` (a resumed round's, from its checkpoint)."""
        self.seed = int(seed)
        self.transform = train_transform(self.patch_size, self.augment, seed=self.seed)

    def __len__(self) -> int:
        return self.length

    def _centre(self, unit: Unit, rng: np.random.Generator) -> tuple[int, int]:
        """Uniform over the unit, less half a patch at each side when the unit is larger."""
        half = self.patch_size // 2
        out = []
        for start, size in ((unit.y, unit.h), (unit.x, unit.w)):
            lo, hi = (
                (start + half, start + size - half)
                if size > self.patch_size
                else (
                    start,
                    start + size,
                )
            )
            out.append(int(rng.integers(lo, max(lo + 1, hi))))
        return out[0], out[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        image, mask, unit = self.regions[int(rng.integers(len(self.regions)))]
        self.transform.set_random_seed(int(rng.integers(2**31 - 1)))
        patch, target = sample_patch(
            self.transform, image, mask, self._centre(unit, rng), self.window
        )
        return torch.from_numpy(patch)[None], torch.from_numpy(target)


class UnlabelledPatchDataset(PatchDataset):
    """Patches centred in unlabelled units, in two views, for semi-supervised training.

    ``regions`` are (image, unlabelled map, unit) triples: the map is 1 where no labelled unit
    covers the pixel. Item ``i`` is a dict: ``weak`` (the labelled stream's augmentation, for
    the teacher), ``strong`` (the weak patch after strong intensity changes, for the student:
    the same pixels) and ``unlabelled`` (bool: the pixels the consistency loss may use).
    """

    def __init__(
        self,
        regions: list[tuple[np.ndarray, np.ndarray, Unit]],
        patch_size: int,
        length: int,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(regions, patch_size, length, augment, seed=seed)
        self.strong = strong_transform(seed=seed)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        weak, unlabelled = super().__getitem__(index)
        rng = np.random.default_rng([self.seed, index, 1])
        self.strong.set_random_seed(int(rng.integers(2**31 - 1)))
        strong = strong_view(self.strong, weak[0].numpy())
        return {
            "weak": weak,
            "strong": torch.from_numpy(strong)[None],
            "unlabelled": unlabelled > 0,
        }


class _From(Sampler):
    """Indices ``start, ..., length - 1``; ``start`` applies to the next pass only."""

    def __init__(self, length: int) -> None:
        self.length, self.start = length, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(range(start, self.length))


class PatchLoader(DataLoader):
    """The training loader, resumable mid-round (Lightning saves its ``state_dict`` in every
    checkpoint and loads it on ``ckpt_path=``): its state is the patch seed and the batches
    already trained, ``trained()`` (one optimizer step per batch), and a resumed loader goes on
    with the very batch an uninterrupted one would have drawn next. Prefetched batches do not
    count: they were drawn but not trained."""

    def __init__(self, dataset: PatchDataset, trained: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, sampler=_From(len(dataset)), **kwargs)
        self.trained = trained

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.dataset.seed, "batches": int(self.trained())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: before the loader's first pass (``start`` applies to the next pass)."""
        self.dataset.reseed(int(state["seed"]))
        self.sampler.start = int(state["batches"]) * int(self.batch_size)


class WholeImageDataset(Dataset):
    """Whole images with their masks, ids and subjects, for evaluation (batch size 1)."""

    def __init__(
        self,
        ids: list[str],
        images: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        subjects: Mapping[str, str] | None = None,
        pixel_sizes: Mapping[str, float | None] | None = None,
    ):
        self.ids, self.images, self.masks = ids, images, masks
        self.subjects = subjects or {}
        self.pixel_sizes = pixel_sizes or {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key = self.ids[index]
        return {
            "id": key,
            "subject": self.subjects.get(key, key),
            "image": torch.from_numpy(self.images[key])[None],
            "mask": torch.from_numpy(self.masks[key]),
            # micrometres per pixel for morphometrics (nan: unknown, measured in pixels)
            "pixel_size": float(self.pixel_sizes.get(key) or float("nan")),
        }


class ActiveDataModule(L.LightningDataModule):
    """Holds the pools and moves unit ids from ``unlabelled`` to ``labelled``."""

    def __init__(
        self,
        samples: Iterable[Sample],
        splits: dict[str, list[str]],
        task: str = "myelin",
        patch_size: int = 256,
        steps: int = 8,
        batch_size: int = 8,
        num_workers: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
        self.task, self.patch_size = task, patch_size
        self.steps, self.batch_size = steps, batch_size
        self.num_workers, self.augment = num_workers, augment
        # > 0: each training batch also holds this many unlabelled patches (trainer.semi)
        self.unlabelled_batch_size = 0
        samples = list(samples)
        self.samples = {s.id: s for s in samples}
        self.images = {s.id: np.asarray(s.image, dtype=np.float32) for s in samples}  # no copy
        # images without a mask (mask=None: real annotation) may only sit in the pool
        self.masks = {s.id: task_mask(s.mask, task) for s in samples if s.mask is not None}
        self.shapes = {i: im.shape for i, im in self.images.items()}
        self.test = list(splits.get("test", []))
        self.val = list(splits.get("val", []))
        unknown = [i for i in self.test + self.val if i not in self.samples]
        if unknown:
            raise ValueError(f"split names images that the dataset lacks: {unknown[:5]}")
        self.labelled = list(splits.get("initial", []))
        self.unlabelled = list(splits.get("pool", []))
        self.units = {u: self._unit(u) for u in self.labelled + self.unlabelled}
        self._check_masks(self.test + self.val + [self.units[u].image for u in self.labelled])

    def _unit(self, unit_id: str) -> Unit:
        try:
            return Unit.parse(unit_id, self.shapes)
        except ValueError as err:
            raise ValueError(f"split names a unit that the dataset lacks: {err}") from None

    def _check_masks(self, image_ids: Iterable[str]) -> None:
        missing = sorted({i for i in image_ids if i not in self.masks})
        if missing:
            raise ValueError(f"images without a mask cannot be labelled or tested: {missing[:5]}")

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
        self._check_masks(self.units[i].image for i in ids)
        chosen = set(ids)
        self.unlabelled = [i for i in self.unlabelled if i not in chosen]
        self.labelled.extend(ids)

    def state_dict(self) -> dict[str, Any]:
        """The pools; inside a trainer also the training loader's position (``patches``)."""
        state: dict[str, Any] = {
            "labelled": list(self.labelled),
            "unlabelled": list(self.unlabelled),
            "test": list(self.test),
            "val": list(self.val),
        }
        if self.trainer is not None and getattr(self, "_train_loader", None) is not None:
            state["patches"] = self._train_loader.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("test", "val"):
            unknown = [i for i in state[key] if i not in self.samples]
            if unknown:
                raise ValueError(f"saved pool {key!r} names images the dataset lacks: {unknown}")
        for key in ("labelled", "unlabelled"):
            for unit_id in state[key]:
                try:
                    self.units[unit_id] = Unit.parse(unit_id, self.shapes)
                except ValueError as err:
                    raise ValueError(f"saved pool {key!r}: {err} (the dataset lacks it)") from None
        for key in ("labelled", "unlabelled", "test", "val"):
            setattr(self, key, list(state[key]))
        # a mid-round checkpoint: the next training loader goes on where it stopped (Lightning
        # restores a datamodule before it builds the loaders, but its loaders' own states only
        # after their first batch is drawn)
        self._resume_patches = state.get("patches")
        self._check_masks(self.test + self.val + [self.units[u].image for u in self.labelled])

    # ------------------------------------------------------------------ what a strategy sees

    def pool_units(self) -> dict[str, list[Unit]]:
        """Unlabelled units grouped by image: each image is scored once, then reduced per unit."""
        out: dict[str, list[Unit]] = {}
        for unit_id in self.unlabelled:
            unit = self.units[unit_id]
            out.setdefault(unit.image, []).append(unit)
        return out

    def pool_images(self) -> dict[str, np.ndarray]:
        return {i: self.images[i] for i in self.pool_units()}

    def labelled_images(self) -> list[str]:
        """Images holding at least one labelled unit, in labelling order."""
        return list(dict.fromkeys(self.units[u].image for u in self.labelled))

    # ------------------------------------------------------------------ the budget

    def train_pixels(self) -> int:
        """Pixels of every training unit, labelled or not (the budget's denominator)."""
        return sum(self.units[u].pixels for u in self.labelled + self.unlabelled)

    def labelled_pixels(self) -> int:
        return sum(self.units[u].pixels for u in self.labelled)

    def loss_masks(self) -> dict[str, np.ndarray]:
        """Per labelled image, its class mask with ``IGNORE`` outside the labelled units."""
        out: dict[str, np.ndarray] = {}
        for unit_id in self.labelled:
            unit = self.units[unit_id]
            if unit.whole:
                out[unit.image] = self.masks[unit.image]
                continue
            if unit.image not in out:
                out[unit.image] = np.full(self.shapes[unit.image], IGNORE, dtype=np.uint8)
            out[unit.image][unit.slices] = self.masks[unit.image][unit.slices]
        return out

    def unlabelled_maps(self) -> dict[str, np.ndarray]:
        """Per image holding a pool unit, 1 where no labelled unit covers the pixel: the pool's
        images, and the unlabelled rest of tile-labelled ones."""
        out = {i: np.ones(self.shapes[i], dtype=np.uint8) for i in self.pool_units()}
        for unit_id in self.labelled:
            unit = self.units[unit_id]
            if unit.image in out:
                out[unit.image][unit.slices] = 0
        return out

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        if not self.labelled:
            raise ValueError("the labelled pool is empty: set al.initial >= 1")
        masks = self.loss_masks()
        regions = [
            (self.images[u.image], masks[u.image], u)
            for u in (self.units[i] for i in self.labelled)
        ]
        ds = PatchDataset(regions, self.patch_size, self.steps * self.batch_size, self.augment)
        loader = PatchLoader(
            ds,
            lambda: self.trainer.global_step if self.trainer is not None else 0,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        resume, self._resume_patches = getattr(self, "_resume_patches", None), None
        if resume:
            loader.load_state_dict(resume)
        self._train_loader = loader
        if not self.unlabelled_batch_size or not self.unlabelled:
            return loader
        unlabelled = self._unlabelled_loader(ds.seed, int(resume["batches"]) if resume else 0)
        return CombinedLoader({"labelled": loader, "unlabelled": unlabelled}, mode="min_size")

    def _unlabelled_loader(self, labelled_seed: int, trained: int = 0) -> DataLoader:
        """``steps`` batches of unlabelled patches, centred uniformly over the pool's units.

        Its seed derives from the labelled stream's without drawing from torch's RNG, so the
        labelled batches are those of supervised training. A round resumed mid-way goes on after
        the ``trained`` batches, as the labelled stream does.
        """
        maps = self.unlabelled_maps()
        regions = [
            (self.images[u.image], maps[u.image], u) for u in map(self.units.get, self.unlabelled)
        ]
        seed = int(np.random.default_rng([labelled_seed, 2]).integers(2**31 - 1))
        n = self.unlabelled_batch_size
        ds = UnlabelledPatchDataset(regions, self.patch_size, self.steps * n, self.augment, seed)
        sampler = _From(len(ds))
        sampler.start = int(trained) * n
        return DataLoader(
            ds,
            batch_size=n,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _whole(self, ids: list[str]) -> DataLoader:
        subjects = {i: self.samples[i].subject for i in ids}
        sizes = {i: self.samples[i].pixel_size for i in ids}
        ds = WholeImageDataset(ids, self.images, self.masks, subjects, sizes)
        return DataLoader(ds, batch_size=1, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._whole(self.val)

    def test_dataloader(self) -> DataLoader:
        return self._whole(self.test)
