"""One round's training: a fixed budget of optimizer steps, and no silent collapses.

A round trains for ``trainer.steps`` optimizer steps (``trainer.finetune_steps`` after round 0
when fine-tuning), whatever the labelled set's size, so random selection and every other
strategy get exactly the same recipe. After training, the model is checked on its own labelled
pixels: a model that predicts (almost) everything or nothing as foreground where its labels
do not (past 90% or under 1%, and off by more than half the labels' share), or that misses a
class the labels hold, or, trained from scratch, whose training loss did not fall, has collapsed
(a fine-tuned model starts near its final loss, so the loss test would flag a healthy one). It
is then retrained from a seed derived from the round's seed, up to ``trainer.max_restarts``
times; the number of restarts is recorded, and the same seed gives the same restarts.
Every ``trainer.checkpoint_every`` steps the round's progress is checkpointed, and a killed
round resumes from its last checkpoint with the same result (:mod:`axal.midround`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from axal import midround
from axal.mc_dropout import eval_mode
from axal.mean_teacher import make_semi
from axal.pools import IGNORE, ActiveDataModule

log = logging.getLogger("axal")


@dataclass(frozen=True)
class CollapseRule:
    """When a trained model counts as degenerate (see the module docstring)."""

    max_foreground: float = 0.9  # predicted foreground above this, background < half the labels'
    min_foreground: float = 0.01  # predicted foreground below this and < half the labels'
    min_class: float = 0.01  # a class holding >= 2x this share of labels predicted below it
    max_loss_ratio: float = 0.95  # mean loss of the last 10% of steps / first 10% above this
    min_steps: int = 20  # the loss test needs at least this many steps

    @classmethod
    def from_config(cls, cfg: DictConfig | dict | None) -> CollapseRule:
        return cls(**dict(cfg or {}))


@dataclass
class RoundFit:
    """What training one round produced: the model, its trainer, and how it got there."""

    model: L.LightningModule
    trainer: L.Trainer
    steps: int
    restarts: int = 0
    collapses: list[str] = field(default_factory=list)  # why each discarded attempt failed
    collapsed: bool = False  # the kept model still failed the check (restarts exhausted)
    seconds: float = 0.0
    train_loss: float | None = None  # the last logged training loss
    semi: dict[str, Any] | None = None  # what semi-supervised training did (trainer.semi)


def attempt_seed(round_seed: int, attempt: int) -> int:
    """Seed of a retraining attempt: attempt 0 is the round's own seed."""
    return int(round_seed) + 7_919_000 * int(attempt)


def class_fractions(model: L.LightningModule, dm: ActiveDataModule) -> tuple[np.ndarray, ...]:
    """(predicted, labelled) share of each class over the labelled pixels, in eval mode."""
    n = dm.n_classes
    pred_counts, true_counts = np.zeros(n), np.zeros(n)
    with eval_mode(model), torch.inference_mode():
        for image_id, mask in dm.loss_masks().items():
            image = torch.from_numpy(dm.images[image_id])[None].to(model.device)
            pred = model.predict_image(image).argmax(0).cpu().numpy()
            known = mask != IGNORE
            pred_counts += np.bincount(pred[known].ravel(), minlength=n)[:n]
            true_counts += np.bincount(mask[known].ravel(), minlength=n)[:n]
    total = max(1.0, true_counts.sum())
    return pred_counts / total, true_counts / total


def collapse_reason(
    predicted: np.ndarray,
    labelled: np.ndarray,
    losses: list[float],
    rule: CollapseRule,
    from_scratch: bool = True,
) -> str | None:
    """Why a model with these class shares and this loss history is degenerate, or None.

    The loss must fall only for a model trained ``from_scratch``: a fine-tuned one starts near
    its final loss.
    """
    fg_pred, fg_true = 1.0 - predicted[0], 1.0 - labelled[0]
    # past a bound and also far from the labels: tiles that are 89% fibre, predicted at 90%,
    # are a good model, not a collapse (the bound alone retrained one twice, issue 23's seed 7)
    if fg_pred > rule.max_foreground and 1.0 - fg_pred < 0.5 * (1.0 - fg_true):
        return f"predicts {fg_pred:.0%} foreground where the labels hold {fg_true:.0%}"
    if fg_pred < rule.min_foreground and fg_pred < 0.5 * fg_true:
        return f"predicts {fg_pred:.1%} foreground where the labels hold {fg_true:.0%}"
    for c in range(1, len(predicted)):
        if labelled[c] >= 2 * rule.min_class and predicted[c] < rule.min_class:
            return (
                f"predicts {predicted[c]:.1%} of class {c} where the labels hold {labelled[c]:.0%}"
            )
    if from_scratch and len(losses) >= rule.min_steps:
        k = max(1, len(losses) // 10)
        first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
        if last > rule.max_loss_ratio * first:
            return f"training loss did not fall ({first:.3f} -> {last:.3f})"
    return None


def make_trainer(
    cfg: DictConfig, steps: int, callbacks: list[L.Callback], has_val: bool
) -> L.Trainer:
    """A Trainer for one epoch of exactly ``steps`` batches (validated once, at its end)."""
    from lightning.pytorch.plugins.environments import LightningEnvironment

    t = cfg.trainer
    checkpointing = any(isinstance(c, midround.ModelCheckpoint) for c in callbacks)
    return L.Trainer(
        # one process per run: no cluster detection, so under SLURM Lightning neither requeues
        # (USR1) nor ends the job early (#20056, #14610); submitit owns that (docs/sweeps.md#slurm)
        plugins=[LightningEnvironment()]
        + ([midround.AtomicCheckpointIO()] if checkpointing else []),
        max_epochs=1,
        max_steps=steps,
        accelerator=t.accelerator,
        devices=t.devices,
        precision=t.get("precision", "32-true"),
        logger=False,
        enable_checkpointing=checkpointing,  # mid-round checkpoints only (axal.midround)
        enable_progress_bar=t.get("progress", True),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if has_val else 0,
        callbacks=callbacks,
        deterministic=t.get("deterministic", False),
    )


def fit_round(
    cfg: DictConfig,
    dm: ActiveDataModule,
    make_model: Callable[[], L.LightningModule],
    round_seed: int,
    steps: int,
    callbacks: list[L.Callback] | None = None,
    from_scratch: bool = True,
    partial: Path | None = None,
    round_index: int = 0,
) -> RoundFit:
    """Train a fresh ``make_model()`` for ``steps`` steps; retrain it while it has collapsed.

    ``from_scratch`` is False when ``make_model`` loads the previous round's weights.
    ``partial`` is the file of this round's mid-round checkpoints (``trainer.checkpoint_every``
    steps apart): training resumes from it when it holds this very round, else starts afresh.
    ``round_index`` decides whether ``trainer.semi`` trains this round (``from_round``).
    """
    from axal import first_round  # it imports this module

    rule = CollapseRule.from_config(cfg.trainer.get("collapse"))
    max_restarts = int(cfg.trainer.get("max_restarts", 2))
    every = int(cfg.trainer.get("checkpoint_every") or 0) if partial is not None else 0
    dm.steps = steps
    semi = make_semi(cfg, round_index) if dm.unlabelled else None  # None: supervised only
    dm.unlabelled_batch_size = (semi.batch_size or dm.batch_size) if semi else 0
    saved = midround.read_state(partial) if every else None
    data = first_round.data_digest(dm) if every else ""
    collapses: list[str] = []
    attempt = int(saved["attempt"]) if saved else 0
    start = time.perf_counter()
    while True:
        L.seed_everything(attempt_seed(round_seed, attempt), workers=True, verbose=False)
        model = make_model()
        model.semi = semi
        extra: list[L.Callback] = []
        resume_from = None
        if every:
            key = midround.round_key(cfg, dm, round_seed, steps, model, data)
            if saved is not None and saved["key"] == key:
                resume_from, collapses = partial, list(saved["collapses"])
                start -= float(saved.get("seconds") or 0.0)
                log.info(
                    "%s: continuing from step %d of %d (attempt %d), the last checkpoint "
                    "inside the round",
                    partial.name.removesuffix(".partial.ckpt"),
                    saved["step"],
                    steps,
                    attempt,
                )
            elif saved is not None:
                log.warning("ignoring %s: it holds another round's training", partial)
                if attempt:  # start the round over at its first attempt
                    saved, attempt = None, 0
                    continue
            saved = None
            spent = time.perf_counter() - start
            extra = midround.callbacks(partial, every, key, attempt, collapses, spent)
        trainer = make_trainer(cfg, steps, list(callbacks or []) + extra, has_val=bool(dm.val))
        trainer.fit(model, datamodule=dm, ckpt_path=resume_from, weights_only=False)
        predicted, labelled = class_fractions(model, dm)
        reason = collapse_reason(predicted, labelled, model.loss_history, rule, from_scratch)
        if reason is None:
            break
        collapses.append(reason)
        if attempt >= max_restarts:
            log.warning("model still collapsed after %d restarts (%s)", max_restarts, reason)
            break
        attempt += 1
        log.warning("collapsed model (%s): retraining, attempt %d", reason, attempt)
    return RoundFit(
        model=model,
        trainer=trainer,
        steps=steps,
        restarts=len(collapses) - (reason is not None),
        collapses=collapses,
        collapsed=reason is not None,
        seconds=time.perf_counter() - start,
        train_loss=_float(trainer.callback_metrics.get("train_loss")),
        semi=semi.summary() if semi else None,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def fit_record(fit: RoundFit) -> dict[str, Any]:
    """The round record's training fields."""
    out = {
        "steps": fit.steps,
        "restarts": fit.restarts,
        "collapses": fit.collapses,
        "collapsed": fit.collapsed,
    }
    if fit.semi is not None:
        out["semi"] = fit.semi
    return out
