"""Checkpoints inside a round: a killed or preempted run resumes mid-round with the same result.

A round trains for thousands of optimizer steps (an hour on a busy CPU). Every
``trainer.checkpoint_every`` steps Lightning's ``ModelCheckpoint`` writes
``checkpoints/round-<r>.partial.ckpt`` in the run folder, to a temporary file renamed over the
last one (:class:`AtomicCheckpointIO`), so a kill mid-write keeps the previous good one. Lightning
saves the weights, the optimizer, the LR scheduler, the loop's step counters and the training
loader's state (the patch seed and the batches trained: :class:`axal.pools.PatchLoader`);
:class:`RoundState` adds what it does not: the RNG states, the loss history the collapse rule
reads, the running sums of the epoch's logged means (``train_loss``), the retraining attempt
with the collapses before it, and a key of everything the round's training depends on. A
resumed round (``trainer.fit(ckpt_path=...)``) therefore takes the very steps an uninterrupted
one takes: on a CPU with ``trainer.deterministic=true`` the weights and the record come out bit
for bit the same. A checkpoint whose key differs (other labelled units, masks, settings or
starting weights) is ignored with a warning, never resumed.

The checkpoint of a round 0 shared through ``al.first_round_cache`` lives in the run folder too:
it is this run's progress, not a cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("axal")
STATE_KEY = "axal_round"


def partial_path(checkpoint: str | Path) -> Path:
    """Where the mid-round checkpoints of the round saved to ``checkpoint`` go."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.partial.ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint I/O, written to a temporary file and renamed over the
    destination (Lightning writes into the destination itself)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class EveryNSteps(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=n)`` into one file, skipping the round's last step
    (the round's own checkpoint follows it at once)."""

    def __init__(self, path: Path, every: int) -> None:
        super().__init__(
            dirpath=path.parent,
            filename=path.name.removesuffix(".ckpt"),
            every_n_train_steps=every,
            save_top_k=1,
            enable_version_counter=False,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():  # the run folder's checkpoints/ holds the last round's
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* not empty")
            super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step < trainer.max_steps:
            super().on_train_batch_end(trainer, *args, **kwargs)


def _rng_states() -> dict[str, Any]:
    """Every global RNG a training step may draw from, in a form ``torch.load`` reads safely."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _epoch_sums(trainer: L.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """The running sums behind each epoch-reduced value logged in ``training_step``."""
    out = {}
    for key, metric in trainer.fit_loop.epoch_loop._results.items():
        if getattr(metric, "is_tensor", False) and metric.meta.on_epoch:
            out[key] = {"value": metric.value.detach().cpu().clone()}
            if metric.meta.is_mean_reduction:
                out[key]["n"] = metric.cumulated_batch_size.detach().cpu().clone()
    return out


def _add_epoch_sums(trainer: L.Trainer, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """Fold the sums of the steps before the checkpoint into this epoch's, as if never stopped
    (called once the first resumed step has logged: x + y is y + x in floating point too)."""
    results = trainer.fit_loop.epoch_loop._results
    for key, sums in saved.items():
        metric = results.get(key)
        if metric is None:
            continue
        before = sums["value"].to(metric.value.device)
        meta = metric.meta
        if meta.is_mean_reduction or meta.is_sum_reduction:
            metric.value = before + metric.value
        elif meta.is_max_reduction or meta.is_min_reduction:
            metric.value = meta.reduce_fx(before, metric.value)
        if "n" in sums and meta.is_mean_reduction:
            metric.cumulated_batch_size = sums["n"].to(metric.value.device) + (
                metric.cumulated_batch_size
            )


class RoundState(L.Callback):
    """Saves and restores, in each checkpoint of the round, what Lightning leaves out.

    The loss history is the module's ``_losses`` (:class:`axal.model.SegModel`), restored once
    ``on_train_start`` has emptied it; the RNG states are restored right before the first
    resumed step, after the loaders drew their own seeds.
    """

    def __init__(self, key: str, attempt: int, collapses: list[str], seconds: float) -> None:
        self.key, self.attempt, self.collapses = key, attempt, list(collapses)
        self.seconds_before = seconds
        self.started = 0.0
        self._pending: dict[str, Any] | None = None
        self._sums: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import time

        self.started = time.perf_counter()

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        import time

        checkpoint[STATE_KEY] = {
            "key": self.key,
            "attempt": self.attempt,
            "collapses": self.collapses,
            "step": int(trainer.global_step),
            "steps": int(trainer.max_steps),
            "seconds": self.seconds_before + time.perf_counter() - self.started,
            "rng": _rng_states(),
            "losses": [float(x) for x in getattr(pl_module, "_losses", [])],
            "epoch_sums": _epoch_sums(trainer),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._pending = checkpoint.get(STATE_KEY)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any):
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        if hasattr(pl_module, "_losses"):
            pl_module._losses = [torch.tensor(x, dtype=torch.float32) for x in state["losses"]]
        self._sums = state.get("epoch_sums") or {}
        _set_rng_states(state["rng"])

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        if self._sums is not None:
            _add_epoch_sums(trainer, self._sums)
            self._sums = None


def round_key(
    cfg: DictConfig, dm: Any, round_seed: int, steps: int, model: torch.nn.Module, data: str
) -> str:
    """What a round's training depends on: the settings (less those a resume may change), the
    round's seed and steps, the labelled units and the :func:`axal.first_round.data_digest`
    ``data`` of their pixels, and the starting weights (fine-tuning starts from the last
    round's model)."""
    from axal.first_round import NOT_IN_KEY
    from axal.rundir import flatten, matches_any

    config = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    kept = {k: v for k, v in flatten(config).items() if not matches_any(k, NOT_IN_KEY)}
    digest = hashlib.sha256()
    blob = {"config": kept, "seed": round_seed, "steps": steps, "labelled": list(dm.labelled)}
    digest.update(json.dumps(blob, sort_keys=True, default=str).encode())
    digest.update(data.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def read_state(path: Path | None) -> dict[str, Any] | None:
    """The :class:`RoundState` of a mid-round checkpoint, or None (absent or unreadable)."""
    if path is None or not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        state = ckpt[STATE_KEY]
        int(state["attempt"]), str(state["key"])
    except Exception as err:  # a damaged checkpoint costs time, never results
        log.warning("ignoring the unreadable mid-round checkpoint %s (%s)", path, err)
        return None
    return state


def callbacks(
    path: Path, every: int, key: str, attempt: int, collapses: list[str], seconds: float
) -> list[L.Callback]:
    """The callbacks that write ``path`` every ``every`` steps (state first, then the file)."""
    return [RoundState(key, attempt, collapses, seconds), EveryNSteps(path, every)]
