"""One active-learning round: train -> test -> acquire, shared by the simulation and annotation.

One round (:func:`active_round`) trains a fresh U-Net or fine-tunes the last one
(``al.reinit``) for a fixed number of optimizer steps on the labelled units
(``axal.training``: collapsed models are retrained), evaluates it on the test set when there
is one, then lets the :class:`Acquisition` pick the best-scored pool units
(:func:`acquire_on`: one explicit call after training and testing, never a trainer hook). In the
simulation (:mod:`axal.simulation`) the annotator reveals the picks' ground-truth masks at
once; in real annotation (:mod:`axal.annotate`) a person adds mask files between runs. The
round's record has the shape of :class:`axal.results.RoundRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from axal.acquisition import Strategy
from axal.checkpoint import load_weights, save_checkpoint
from axal.errors import ConfigError
from axal.first_round import restore_with, shared_fit
from axal.midround import partial_path
from axal.pools import ActiveDataModule
from axal.results import Results, RoundRecord
from axal.round_acquisition import Acquisition
from axal.settings import build_model, cost_model, replicate, train_seed
from axal.training import RoundFit, fit_record, fit_round, make_trainer


def per_round(cfg: DictConfig, round_index: int) -> int:
    """Units labelled after round ``round_index``: ``al.per_round``, or its entry for that round
    when it is a list (the last entry repeats), e.g. a budget that grows geometrically."""
    value = cfg.al.per_round
    if OmegaConf.is_list(value):
        return int(value[min(round_index, len(value) - 1)])
    return int(value)


def round_steps(cfg: DictConfig, fine_tune: bool) -> int:
    """Optimizer steps of a round: ``trainer.finetune_steps`` when it fine-tunes a model."""
    finetune = cfg.trainer.get("finetune_steps")
    if fine_tune and finetune:
        return int(finetune)
    return int(cfg.trainer.steps)


def make_acquisition(
    cfg: DictConfig,
    strategy: Strategy,
    run_dir: Path,
    round_index: int,
    k: int | None = None,
    reveal: bool = True,
) -> Acquisition:
    """The acquisition that picks ``k`` units (default ``al.per_round``) after the round's
    test; ``reveal`` labels them at once (simulation), else they wait for a person's masks."""
    return Acquisition(
        strategy,
        per_round=per_round(cfg, round_index) if k is None else max(k, 1),
        mc_samples=cfg.al.mc_samples,
        seed=cfg.seed,
        round_index=round_index,
        maps_dir=run_dir / "maps",
        n_fixed_maps=cfg.al.get("n_fixed_maps", 2),
        sample_chunk=cfg.al.get("sample_chunk"),
        tile_batch=cfg.al.get("tile_batch"),
        min_distance=cfg.al.get("min_distance", 0),
        progress=cfg.trainer.get("progress", True),
        reveal=reveal,
        cost=cost_model(cfg),
        replicate=replicate(cfg),
    )


def acquire_on(
    trainer: L.Trainer,
    acquisition: Acquisition,
    dm: ActiveDataModule,
    model: L.LightningModule,
) -> None:
    """Score ``dm``'s pool with ``model`` and pick, on the trainer's device.

    Lightning moves a model back to the CPU when ``fit`` or ``test`` ends; the scoring pass
    runs where the round trained and tested, and the model goes back to the CPU for its
    checkpoint."""
    model.to(trainer.strategy.root_device)
    try:
        acquisition.score_and_pick(dm, model)
    finally:
        model.cpu()


@dataclass
class Round:
    """One round's outcome: its record (JSON-ready), the trained model and the acquisition."""

    record: RoundRecord
    fit: RoundFit
    acquisition: Acquisition


def active_round(
    cfg: DictConfig,
    dm: ActiveDataModule,
    strategy: Strategy,
    round_index: int,
    k: int,
    run_dir: Path,
    checkpoint: Path,
    previous: Path | None = None,
    reveal: bool = True,
    shared: Path | None = None,
    extra_callbacks: list[L.Callback] | None = None,
) -> Round:
    """One round, shared by the simulation and real annotation.

    Trains a new model on ``dm``'s labelled units, or fine-tunes the ``previous`` checkpoint
    (``trainer.finetune_steps``); tests it when ``dm`` has a test set; scores the pool and
    picks ``k`` units (none when ``k`` is 0); saves the model to ``checkpoint``. ``reveal``
    (simulation) labels the picks in ``dm``; otherwise they stay in the pool until a person
    labels them. ``shared`` is the :mod:`axal.first_round` entry a round 0 is loaded from, or
    trained into. ``extra_callbacks`` join the trainer (e.g. a progress bar of the widget).
    """
    r = round_index

    def make_model() -> L.LightningModule:
        model = build_model(cfg, dm.n_classes)
        if previous is not None:
            load_weights(model, previous, str(cfg.task))
        return model

    k = min(k, len(dm.unlabelled))
    acquisition = make_acquisition(cfg, strategy, run_dir, r, k=k, reveal=reveal)
    labelled = list(dm.labelled)
    labelled_pixels = dm.labelled_pixels()
    seed = train_seed(cfg, r)
    steps = round_steps(cfg, previous is not None)
    callbacks = list(extra_callbacks or [])

    def train() -> RoundFit:
        return fit_round(
            cfg,
            dm,
            make_model,
            seed,
            steps,
            callbacks,
            from_scratch=previous is None,
            partial=partial_path(checkpoint),  # in the run folder, even for a shared round 0
            round_index=r,
        )

    sharing = None
    if shared is None:
        fit = train()
    else:
        fit, sharing = shared_fit(
            shared,
            train,
            restore_with(make_model, str(cfg.task)),
            lambda n: make_trainer(cfg, n, callbacks, has_val=bool(dm.val)),
            run_dir,
        )
    model, trainer = fit.model, fit.trainer
    if dm.test:
        trainer.test(model, datamodule=dm, verbose=False)
    if k:
        acquire_on(trainer, acquisition, dm, model)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(trainer, checkpoint)  # temp file + rename: never truncated
    pool_pixels = dm.train_pixels()
    record = RoundRecord(
        round=r,
        seed=seed,
        n_labelled=len(labelled),
        labelled_pixels=labelled_pixels,
        labelled_fraction=labelled_pixels / max(1, pool_pixels),
        labelled=labelled,
        selected=acquisition.selected,
        scores=acquisition.scores,
        test=model.test_metrics if dm.test else None,
        train_loss=fit.train_loss,
        **fit_record(fit),
        fine_tuned_from=None if previous is None else _relative(previous, run_dir),
        checkpoint=_relative(checkpoint, run_dir),
        train_seconds=round(fit.seconds, 3),
        acquire_seconds=round(acquisition.seconds, 3),
        correction=acquisition.correction,
        uncertainty_maps=[_relative(Path(p), run_dir) for p in acquisition.maps],
    )
    if sharing is not None:
        record["shared_first_round"] = sharing
    return Round(record, fit, acquisition)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def reopen_last_round(
    cfg: DictConfig,
    run_dir: Path,
    dm: ActiveDataModule,
    strategy: Strategy,
    results: Results,
    n_classes: int,
) -> None:
    """Extend a finished run: score the pool with the last round's model and label the picks.

    The last round of a run labels nothing. A longer run would have scored the pool with that
    round's model (its checkpoint is kept) and the same seeds, so the picks match it exactly.
    """
    last = results["rounds"][-1]
    r = int(last["round"])
    ckpt = run_dir / "checkpoints" / f"round-{r}.ckpt"
    if not ckpt.is_file():
        raise ConfigError(
            f"resume={run_dir}: cannot extend the finished run: its last model {ckpt} is "
            f"missing. Start a new run with al.rounds={cfg.al.rounds}"
        )
    L.seed_everything(train_seed(cfg, r), workers=True, verbose=False)
    model = build_model(cfg, n_classes)
    load_weights(model, ckpt, str(cfg.task))
    acquisition = make_acquisition(cfg, strategy, run_dir, r)
    trainer = make_trainer(cfg, int(last.get("steps") or 1), [], has_val=False)
    acquire_on(trainer, acquisition, dm, model)
    last["selected"] = acquisition.selected
    last["scores"] = acquisition.scores
    last["acquire_seconds"] = round(acquisition.seconds, 3)
    last["uncertainty_maps"] = list(last.get("uncertainty_maps", [])) + [
        str(Path(p).relative_to(run_dir)) for p in acquisition.maps
    ]
    results["finished"] = False
