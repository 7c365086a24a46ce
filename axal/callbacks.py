"""AcquisitionCallback: after a round's test evaluation, score the pool and label the best.

Lightning cannot nest a Trainer call inside a callback, so scoring is the plain torch loop of
``axal.acquisition.acquire``. The callback only moves ids between pools and records what it
did (picks, scores, seconds, uncertainty figures); it does not train, and the loop does not
score.
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
from axal.figures import save_uncertainty_png
from axal.mc_dropout import PixelStats

MAP_SIZE = 256  # longest side of the copies kept for figures: the engine's maps are dropped


def _shrink(x: torch.Tensor, size: int = MAP_SIZE) -> np.ndarray:
    """A small float16 copy of an (H, W) map for figures, so no full-size map is kept."""
    h, w = x.shape[-2:]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        x = F.interpolate(x[None, None].float(), scale_factor=scale, mode="area")[0, 0]
    return x.cpu().numpy().astype(np.float16)


class AcquisitionCallback(L.Callback):
    """Runs one acquisition when round ``round_index``'s ``trainer.test`` ends."""

    def __init__(
        self,
        strategy: Strategy,
        per_round: int,
        mc_samples: int,
        seed: int,
        round_index: int,
        maps_dir: str | Path | None = None,
        n_fixed_maps: int = 2,
        sample_chunk: int = 2,
        tile_batch: int = 2,
        progress: bool = True,
    ) -> None:
        self.strategy, self.per_round, self.mc_samples = strategy, per_round, mc_samples
        self.seed, self.round = seed, round_index
        self.maps_dir = Path(maps_dir) if maps_dir else None
        self.n_fixed_maps, self.progress = n_fixed_maps, progress
        self.sample_chunk, self.tile_batch = sample_chunk, tile_batch
        self.selected: list[str] = []
        self.scores: dict[str, float] = {}
        self.seconds = 0.0
        self.maps: list[str] = []

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        pool = dm.pool_images()
        if not pool:
            return
        k = min(self.per_round, len(pool))
        fixed = sorted(pool)[: self.n_fixed_maps]
        kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def keep(image_id: str, stats: PixelStats, pixel_map: torch.Tensor) -> None:
            if self.maps_dir is not None:
                kept[image_id] = (_shrink(stats.prediction.float()), _shrink(pixel_map))

        start = time.perf_counter()
        selected, scores = acquire(
            self.strategy,
            pl_module.net,
            pool,
            k,
            mc_samples=self.mc_samples,
            seed=self.seed * 100_003 + self.round,
            patch=pl_module.hparams.patch_size,
            overlap=pl_module.hparams.overlap,
            labelled_images={i: dm.images[i] for i in dm.labelled},
            sample_chunk=self.sample_chunk,
            tile_batch=self.tile_batch,
            device=pl_module.device,
            progress=self.progress,
            on_image=keep,
        )
        self.seconds = time.perf_counter() - start
        dm.label(selected)
        self.selected = list(selected)
        self.scores = {i: float(v) for i, v in scores.items() if np.isfinite(v)}
        self.maps = self._save_maps(
            dm,
            kept,
            list(selected) + [i for i in fixed if i not in selected],
            n_classes=int(getattr(pl_module.hparams, "n_classes", 2)),
        )

    def _save_maps(self, dm: Any, kept: dict, ids: list[str], n_classes: int = 2) -> list[str]:
        """PNG of image, prediction and uncertainty for the picks and the fixed pool images."""
        if self.maps_dir is None or not kept:
            return []
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in ids:
            if i not in kept:
                continue
            prediction, uncertainty = kept[i]
            image = _shrink(torch.from_numpy(dm.images[i]))
            role = "picked" if i in self.selected else "fixed"
            path = self.maps_dir / f"round-{self.round:02d}_{role}_{i}.png"
            title = (
                f"round {self.round} | {role} | {i} | score {self.scores.get(i, float('nan')):.4g}"
            )
            save_uncertainty_png(
                path,
                image,
                prediction,
                uncertainty,
                title=title,
                measure=getattr(self.strategy, "measure", self.strategy.name),
                n_classes=n_classes,
            )
            paths.append(str(path))
        return paths
