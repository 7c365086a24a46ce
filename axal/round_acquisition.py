"""Acquisition: after a round's training and test, score the pool and label the best.

The round (:func:`axal.rounds.acquire_on`) calls :meth:`Acquisition.score_and_pick`
once, after ``trainer.test`` when there is a test set: one path, never a trainer hook. Scoring
is the plain torch loop of ``axal.acquisition.acquire``. The acquisition only moves ids between
pools and records what it did (picks, scores, seconds, uncertainty figures); it does not train,
and the round does not score. In a simulation it labels its picks at once (the annotator
reveals their ground truth); with ``reveal=False`` (real annotation) the picks stay in the pool
until a person adds their masks.

Not a Lightning callback (the first design sketch's ``AcquisitionCallback``): a round with no
test set (``annotate.py`` on a lab's folder) runs no test hook, so a hook would need a second
path; the round calls it once, explicitly, in the simulation and in annotate alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from axal.acquisition import Strategy, acquire
from axal.domain import unit_image
from axal.mc_dropout import PixelStats
from axal.overlays import save_uncertainty_png

MAP_SIZE = 256  # longest side of the copies kept for figures: the engine's maps are dropped
# MC batch (tiles x samples through the stochastic suffix) when al.tile_batch/sample_chunk are
# null: small enough to stay in a CPU's cache; on an H100, 8 x 10 ran the default model's
# head placement at 61 img/s where 2 x 2 gave 18 (T=20)
MC_BATCH = {"cpu": (2, 2), "cuda": (8, 10)}


def mc_batch(device: torch.device, tile_batch: int | None, sample_chunk: int | None) -> tuple:
    """(tile_batch, sample_chunk): the configured values, else the device's default."""
    tiles, samples = MC_BATCH.get(device.type, MC_BATCH["cpu"])
    return int(tile_batch or tiles), int(sample_chunk or samples)


def shrink_map(x: torch.Tensor, size: int = MAP_SIZE) -> np.ndarray:
    """A small float16 copy of an (H, W) map for figures, so no full-size map is kept."""
    h, w = x.shape[-2:]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x[None, None].float(), scale_factor=scale, mode="area")[0, 0]
    return x.cpu().numpy().astype(np.float16)


def subjects_of(dm: Any, image_ids: Any) -> dict[str, str]:
    """Image id -> subject of the data module's samples (for ``strategy.stratify=subject``)."""
    samples = getattr(dm, "samples", None) or {}
    return {i: samples[i].subject for i in image_ids if i in samples}


def acquisition_seed(seed: int, round_index: int, replicate: int = 0) -> int:
    """The seed of round ``round_index``'s picks: replicate 0 keeps the seed's own draw (runs
    recorded before replicates existed pick the same), replicate k > 0 draws again."""
    base = int(seed) * 100_003 + int(round_index)
    return base if not replicate else base + int(replicate) * 10**12


class Acquisition:
    """One acquisition of round ``round_index``: :meth:`score_and_pick`, and what it did."""

    def __init__(
        self,
        strategy: Strategy,
        per_round: int,
        mc_samples: int,
        seed: int,
        round_index: int,
        maps_dir: str | Path | None = None,
        n_fixed_maps: int = 2,
        sample_chunk: int | None = None,
        tile_batch: int | None = None,
        min_distance: float = 0.0,
        progress: bool = True,
        reveal: bool = True,
        cost: Any = None,
        replicate: int = 0,
    ) -> None:
        self.strategy, self.per_round, self.mc_samples = strategy, per_round, mc_samples
        self.seed, self.round = seed, round_index
        self.replicate = int(replicate or 0)  # al.replicate: another draw, same seed
        self.maps_dir = Path(maps_dir) if maps_dir else None
        self.n_fixed_maps, self.progress = n_fixed_maps, progress
        self.sample_chunk, self.tile_batch = sample_chunk, tile_batch
        self.min_distance = float(min_distance or 0.0)
        self.reveal = reveal
        self.cost = cost  # axal.morphometrics.CostModel: correction effort of revealed units
        self.correction: dict[str, float] | None = None
        self.selected: list[str] = []
        self.scores: dict[str, float] = {}
        self.seconds = 0.0
        self.maps: list[str] = []
        # small (prediction, uncertainty map) copies of the picked images, for figures
        self.picked_maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def score_and_pick(self, dm: Any, pl_module: L.LightningModule) -> list[str]:
        """Score the pool of ``dm`` with ``pl_module``'s network and pick ``per_round`` units
        (labelled in ``dm`` at once when ``reveal``)."""
        pool = dm.pool_units()
        if not pool:
            return []
        k = min(self.per_round, len(dm.unlabelled))
        fixed = sorted(pool)[: self.n_fixed_maps]
        kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def keep(image_id: str, stats: PixelStats, pixel_map: torch.Tensor) -> None:
            if self.maps_dir is not None:
                kept[image_id] = (shrink_map(stats.prediction.float()), shrink_map(pixel_map))

        labelled_units: dict[str, list] = {}
        for unit_id in dm.labelled:
            unit = dm.units[unit_id]
            labelled_units.setdefault(unit.image, []).append(unit)
        tile_batch, sample_chunk = mc_batch(pl_module.device, self.tile_batch, self.sample_chunk)
        start = time.perf_counter()
        selected, scores = acquire(
            self.strategy,
            pl_module.net,
            {i: dm.images[i] for i in pool},
            k,
            units=pool,
            mc_samples=self.mc_samples,
            seed=acquisition_seed(self.seed, self.round, self.replicate),
            patch=pl_module.hparams.patch_size,
            overlap=pl_module.hparams.overlap,
            labelled_images={i: dm.images[i] for i in labelled_units},
            labelled_units=labelled_units,
            sample_chunk=sample_chunk,
            tile_batch=tile_batch,
            min_distance=self.min_distance,
            device=pl_module.device,
            progress=self.progress,
            on_image=keep,
            round_index=self.round,
            subjects=subjects_of(dm, pool),
        )
        self.seconds = time.perf_counter() - start
        if self.reveal:
            dm.label(selected)
            self.correction = self._correction(dm, pl_module, selected)
        self.selected = list(selected)
        self.scores = {i: float(v) for i, v in scores.items() if np.isfinite(v)}
        picked = list(dict.fromkeys(dm.units[u].image for u in selected))
        self.picked_maps = {i: kept[i] for i in picked if i in kept}
        self.maps = self._save_maps(
            dm,
            kept,
            picked + [i for i in fixed if i not in picked],
            picked=set(picked),
            n_classes=int(getattr(pl_module.hparams, "n_classes", 2)),
        )
        return self.selected

    def _correction(
        self, dm: Any, pl_module: L.LightningModule, selected: list[str]
    ) -> dict[str, float] | None:
        """What correcting the picking model's prediction into the truth takes, inside each
        revealed unit (axon+myelin task only), summed over this round's units."""
        if int(getattr(pl_module.hparams, "n_classes", 2)) != 3 or not selected:
            return None
        from axal.morphometrics import correction_effort

        total: dict[str, float] = {}
        predictions: dict[str, np.ndarray] = {}
        was_training = pl_module.training
        pl_module.eval()
        for unit_id in selected:
            unit = dm.units[unit_id]
            if unit.image not in predictions:
                image = torch.from_numpy(dm.images[unit.image])[None].to(pl_module.device)
                predictions[unit.image] = pl_module.predict_image(image).argmax(0).cpu().numpy()
            cut = unit.slices
            effort = correction_effort(
                predictions[unit.image][cut], dm.masks[unit.image][cut], self.cost
            )
            for key, value in effort.items():
                total[key] = total.get(key, 0) + value
        pl_module.train(was_training)
        return total

    def _save_maps(
        self, dm: Any, kept: dict, ids: list[str], picked: set[str], n_classes: int = 2
    ) -> list[str]:
        """PNG of image, prediction and uncertainty for the picked and the fixed pool images
        (``picked``: the images holding a picked unit; the title gives their best unit score)."""
        if self.maps_dir is None or not kept:
            return []
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        active = self.strategy.for_round(self.round)
        paths = []
        for i in ids:
            if i not in kept:
                continue
            prediction, uncertainty = kept[i]
            image = shrink_map(torch.from_numpy(dm.images[i]))
            role = "picked" if i in picked else "fixed"
            path = self.maps_dir / f"round-{self.round:02d}_{role}_{i}.png"
            score = max((v for u, v in self.scores.items() if unit_image(u) == i), default=None)
            shown = "" if score is None else f" | score {score:.4g}"
            title = f"round {self.round} | {role} | {i}{shown}"
            scale = prediction.shape[0] / dm.images[i].shape[0]  # maps are shrunk copies
            units = getattr(dm, "units", {})
            boxes = [
                (u.x * scale, u.y * scale, u.w * scale, u.h * scale)
                for u in (units[sel] for sel in self.selected if sel in units)
                if u.image == i and not u.whole
            ]
            save_uncertainty_png(
                path,
                image,
                prediction,
                uncertainty,
                title=title,
                boxes=boxes,
                measure=getattr(active, "measure", active.name),
                n_classes=n_classes,
            )
            paths.append(str(path))
        return paths
