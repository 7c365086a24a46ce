"""The active-learning loop: rounds of train -> test -> acquire, recorded in results.json.

One round (:func:`active_round`, shared with real annotation in ``axal.annotate``) trains a
fresh U-Net or fine-tunes the last one (``al.reinit``) for a fixed number of optimizer steps on
the labelled units (``axal.training``: collapsed models are retrained), evaluates it on the test
set when there is one, and lets the :class:`AcquisitionCallback` pick the best-scored pool
units. In this simulation the annotator reveals the picks' ground-truth masks at once; in real
annotation a person adds mask files between runs. After every round ``results.json`` and the
round's checkpoint are written atomically, so a run killed in round k loses at most round k and
``resume=<run dir>`` continues from there. Every random choice of round r is seeded from
``(seed, r)`` alone: a resumed run makes the same choices as an uninterrupted one, and every
strategy starts from the same split, initial set and initial weights for a given seed
(comparisons are paired by seed).

A run holds its folder's lock (:mod:`axal.rundir`) from start to end. A resume must keep every
setting that alters the experiment (only speed and logging settings may change, and
``al.rounds`` may grow: a finished run is extended by scoring the pool with its last model);
it writes its config beside ``config.yaml`` and appends to the logs.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from axal.acquisition import Strategy, typical_units
from axal.atomic import atomic_write, atomic_write_json
from axal.callbacks import AcquisitionCallback
from axal.checkpoint import describe_model, load_weights, save_checkpoint
from axal.data import check_foreground, load_dataset, split_by_subject
from axal.errors import ConfigError
from axal.first_round import data_digest, entry_dir, restore_with, shared_fit
from axal.mean_teacher import make_semi
from axal.midround import partial_path
from axal.morphometrics import CostModel
from axal.networks import PLACEMENTS
from axal.pools import TASKS, UNIT_KINDS, ActiveDataModule, Unit, unit_splits
from axal.results import CONTRACT_KEYS, RESULTS, Results, RoundRecord
from axal.rundir import (
    RunLock,
    check_fresh,
    check_resume_dir,
    compare_configs,
    write_config,
)
from axal.tracking import finish, log_round, make_logger
from axal.training import RoundFit, fit_record, fit_round, make_trainer

log = logging.getLogger("axal")


def round_seed(seed: int, round_index: int) -> int:
    return seed * 1000 + round_index


def load_samples(cfg: DictConfig) -> list:
    d = cfg.dataset
    return load_dataset(
        d.name,
        root=d.get("root"),
        pixel_size=d.get("pixel_size"),
        n_images=d.get("n_images", 12),
        size=d.get("size", 128),
        n_subjects=d.get("n_subjects", 6),
        seed=d.get("synthetic_seed", 0),
        task=cfg.task,
        mask_encoding=d.get("mask_encoding", "auto"),
        bit_depth=d.get("bit_depth"),
    )


def make_splits(cfg: DictConfig, samples: list) -> dict[str, list[str]]:
    """Test/val subjects (seeded K-fold by default), then the initial units and the pool."""
    unit = cfg.al.get("unit", "image")
    images = split_by_subject(
        samples,
        n_test=cfg.dataset.test_subjects,
        n_val=cfg.dataset.val_subjects,
        n_initial=cfg.al.initial if unit == "image" else 1,
        seed=cfg.seed,
        folds=bool(cfg.dataset.get("folds", True)),
        fold_seed=int(cfg.dataset.get("fold_seed", 0)),
    )
    shapes = {s.id: s.image.shape for s in samples}
    splits = unit_splits(
        images, shapes, unit, cfg.al.get("tile_size"), int(cfg.al.initial), int(cfg.seed)
    )
    if full_data(cfg):  # the full-data reference: every training unit labelled from the start
        splits["initial"], splits["pool"] = splits["initial"] + splits["pool"], []
    elif cfg.al.get("initial_pick", "random") == "typical":
        splits = _typical_initial(cfg, samples, splits)
    return splits


def _typical_initial(cfg: DictConfig, samples: list, splits: dict) -> dict[str, list[str]]:
    """The initial units picked label-free by TypiClust on the features of round 0's network at
    its initial weights (seeded like round 0), instead of at random; test/val are unchanged."""
    train = splits["initial"] + splits["pool"]
    with torch.random.fork_rng():
        torch.manual_seed(round_seed(cfg.seed, 0))
        net = build_model(cfg, TASKS[cfg.task]).net
    images = {s.id: s.image for s in samples}
    module = cfg.model.module
    chosen = typical_units(
        net,
        images,
        train,
        len(splits["initial"]),
        int(cfg.seed),
        patch=int(module.patch_size),
        overlap=int(module.overlap),
    )
    taken = set(chosen)
    return {**splits, "initial": chosen, "pool": [u for u in train if u not in taken]}


def full_data(cfg: DictConfig) -> bool:
    """``strategy=full`` (:attr:`Strategy.full_data`): one model per seed on every training
    unit, the same recipe."""
    target = cfg.strategy.get("_target_")
    return bool(target) and bool(getattr(get_class(str(target)), "full_data", False))


def build_model(cfg: DictConfig, n_classes: int) -> L.LightningModule:
    """A fresh model that will save what predictions need into its checkpoints."""
    net = instantiate(cfg.model.net, classes=n_classes)
    model = instantiate(cfg.model.module, net=net, n_classes=n_classes)
    model.meta = describe_model(cfg)
    return model


def build_strategy(cfg: DictConfig) -> Strategy:
    params = OmegaConf.to_container(cfg.strategy, resolve=True)
    params.pop("name", None)
    return instantiate(params)


def make_strategy(cfg: DictConfig) -> Strategy:
    """The configured strategy; refused when it needs MC dropout and the network has none."""
    try:
        strategy = build_strategy(cfg)
    except InstantiationException as err:
        raise ConfigError(f"strategy={strategy_label(cfg)}: {err.__cause__ or err}") from err
    if strategy.needs_mc and (
        cfg.model.get("dropout_placement") == "none" or not cfg.model.get("dropout_rate")
    ):
        raise ConfigError(
            f"strategy={strategy_label(cfg)} needs MC dropout, but model.dropout_placement="
            f"{cfg.model.get('dropout_placement')} and model.dropout_rate="
            f"{cfg.model.get('dropout_rate')} leave the network without dropout"
        )
    return strategy


def strategy_label(cfg: DictConfig) -> str:
    return str(cfg.strategy.get("name") or cfg.strategy._target_.rsplit(".", 1)[-1].lower())


def run_label(cfg: DictConfig) -> str:
    """The default display label: the strategy's name, ``+mean_teacher`` with trainer.semi."""
    semi = cfg.trainer.get("semi")
    name = semi.get("name", "none") if OmegaConf.is_dict(semi) else "none"
    return strategy_label(cfg) + ("" if name == "none" else f"+{name}")


def check_config(cfg: DictConfig) -> None:
    """Fail early, naming the setting, before anything is computed."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    for key in ("initial", "per_round", "rounds", "mc_samples"):
        value = cfg.al[key]
        values = list(value) if key == "per_round" and OmegaConf.is_list(value) else [value]
        if not values or any(not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f"al.{key}={value!r} must be a positive integer")
    for key in ("steps", "finetune_steps", "max_restarts", "checkpoint_every"):
        value = cfg.trainer.get(key)
        minimum = 0 if key in ("max_restarts", "checkpoint_every") else 1
        if value is None and key in ("finetune_steps", "checkpoint_every"):
            continue
        if not isinstance(value, int) or value < minimum:
            raise ConfigError(f"trainer.{key}={value!r} must be an integer >= {minimum}")
    pick = cfg.al.get("initial_pick", "random")
    if pick not in ("random", "typical"):
        raise ConfigError(f"al.initial_pick={pick!r} is not one of random, typical")
    replicate(cfg)
    unit = cfg.al.get("unit", "image")
    if unit not in UNIT_KINDS:
        raise ConfigError(f"al.unit={unit!r} is not one of {', '.join(UNIT_KINDS)}")
    if unit == "tile":
        size = cfg.al.get("tile_size")
        if not isinstance(size, int) or size < 8:
            raise ConfigError(f"al.tile_size={size!r} must be an integer >= 8 (pixels)")
    placement = cfg.model.get("dropout_placement", "paper")
    if placement not in PLACEMENTS:
        raise ConfigError(
            f"model.dropout_placement={placement!r} is not one of {', '.join(PLACEMENTS)}"
        )
    try:
        make_semi(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.dataset.patch_size % 32 or cfg.dataset.patch_size < 32:
        raise ConfigError(
            f"dataset.patch_size={cfg.dataset.patch_size} must be a positive multiple of 32"
        )


def _new_results(cfg: DictConfig, splits: dict[str, list[str]]) -> Results:
    return Results(
        dataset=str(cfg.dataset.name),
        task=str(cfg.task),
        strategy=strategy_label(cfg),
        seed=int(cfg.seed),
        label=str(cfg.get("label") or run_label(cfg)),
        unit=str(cfg.al.get("unit", "image")),
        tile_size=cfg.al.get("tile_size") if cfg.al.get("unit", "image") == "tile" else None,
        fold=int(cfg.seed) if cfg.dataset.get("folds", True) else None,
        replicate=replicate(cfg),
        splits=splits,
        rounds=[],
        finished=False,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def _load_previous(run_dir: Path, cfg: DictConfig) -> tuple[Results, dict[str, list]]:
    """The recorded run, and the settings this resume changes (refusing those that matter)."""
    path = run_dir / RESULTS
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"resume={run_dir}: {path} is not readable ({err}). Move it aside and start a new run"
        ) from err
    expected = _new_results(cfg, {})
    for key in CONTRACT_KEYS:
        if results.get(key) != expected[key]:
            raise ConfigError(
                f"resume={run_dir}: the saved run has {key}={results.get(key)!r} but this "
                f"command asks for {key}={expected[key]!r}"
            )
    changes = compare_configs(results.get("config") or {}, expected["config"], run_dir)
    return results, changes


def _restore_pools(dm: ActiveDataModule, results: Results) -> None:
    """Labelled = the last finished round's labelled set plus what it selected."""
    last = results["rounds"][-1]
    labelled = list(last["labelled"]) + list(last["selected"])
    chosen = set(labelled)
    pool = results["splits"]["initial"] + results["splits"]["pool"]
    dm.load_state_dict(
        {
            "labelled": labelled,
            "unlabelled": [i for i in pool if i not in chosen],
            "test": results["splits"]["test"],
            "val": results["splits"]["val"],
        }
    )


def run(cfg: DictConfig, run_dir: str | Path) -> Results:
    """Run (or resume) a whole simulation in ``run_dir``; return the results dict.

    A new run needs a folder without results; ``resume=<dir>`` continues the run in ``<dir>``
    (``run_dir`` is then ignored). The folder is locked while the run uses it.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set, e.g. python run.py {missing[0]}=..."
            + (" (the folder of your labelled images)" if "dataset.root" in missing else "")
        )
    try:
        check_config(cfg)
    except ValueError as err:  # check_config names the setting
        raise ConfigError(str(err)) from err
    strategy = make_strategy(cfg)
    resume = cfg.get("resume")
    if resume:
        run_dir = check_resume_dir(resume)
    else:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        check_fresh(run_dir)
    with RunLock(run_dir):
        return _run_locked(cfg, run_dir, strategy, bool(resume))


def _run_locked(cfg: DictConfig, run_dir: Path, strategy: Strategy, resume: bool) -> Results:
    if cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    changes: dict[str, list] = {}
    if resume:
        results, changes = _load_previous(run_dir, cfg)
    else:
        check_fresh(run_dir)  # again, now that the folder is ours
    samples = load_samples(cfg)
    n_classes = TASKS[cfg.task]
    if not resume:
        results = _new_results(cfg, make_splits(cfg, samples))
    splits = results["splits"]
    dm = ActiveDataModule(
        samples,
        splits,
        task=cfg.task,
        patch_size=cfg.dataset.patch_size,
        steps=cfg.trainer.steps,
        batch_size=cfg.dataset.batch_size,
        num_workers=cfg.dataset.get("num_workers", 0),
        augment=cfg.dataset.get("augment", True),
    )
    results.setdefault("pool_pixels", dm.train_pixels())
    check_foreground(dm.masks, dm.test, cfg.task)
    if results["rounds"]:
        _restore_pools(dm, results)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if resume:
        done = len(results["rounds"])
        if results["finished"]:
            if done >= cfg.al.rounds or not dm.unlabelled:
                why = "the pool is empty" if not dm.unlabelled else f"{done} rounds are done"
                log.info("%s is finished (%s): nothing to do", run_dir, why)
                return results
            log.info(
                "extending the finished run %s from %d to %d rounds", run_dir, done, cfg.al.rounds
            )
            _reopen_last_round(cfg, run_dir, dm, strategy, results, n_classes)
        written = write_config(run_dir, config_yaml, "resume")
        results["config"] = OmegaConf.to_container(cfg, resolve=True)
        results.setdefault("resumes", []).append(
            {
                "at": dt.datetime.now().isoformat(timespec="seconds"),
                "from_round": done,
                "config": written.name,
                "changed": changes,
            }
        )
        log.info("resuming %s at round %d (config: %s)", run_dir, done, written.name)
    else:
        write_config(run_dir, config_yaml, "restart")
    atomic_write_json(run_dir / RESULTS, results)

    label = run_label(cfg)
    logger = make_logger(
        OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None,
        run_dir,
        results["config"],
        name=f"{cfg.dataset.name}-{label}-seed{cfg.seed}",
        group=f"{cfg.dataset.name}/{label}",
        tags=[f"seed={cfg.seed}", f"dataset={cfg.dataset.name}", f"strategy={label}"],
        step_metric="labelled_fraction" if results.get("unit") == "tile" else "n_labelled",
    )
    status = "failed"
    try:
        _rounds(cfg, run_dir, dm, strategy, results, logger)
        status = "success"
    finally:
        finish(logger, status)
    return results


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


def cost_model(cfg: DictConfig) -> CostModel:
    """The annotator-time model of ``al.cost`` (defaults and their source: axal.morphometrics)."""
    return CostModel(**dict(cfg.al.get("cost") or {}))


def _acquisition_callback(
    cfg: DictConfig,
    strategy: Strategy,
    run_dir: Path,
    round_index: int,
    k: int | None = None,
    reveal: bool = True,
) -> AcquisitionCallback:
    """The callback that picks ``k`` units (default ``al.per_round``) after round's test;
    ``reveal`` labels them at once (simulation), else they wait for a person's masks."""
    return AcquisitionCallback(
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


def replicate(cfg: DictConfig) -> int:
    """``al.replicate``: another draw of a seed. Same split, same round 0 (shared through
    al.first_round_cache), other picks; for strategy=full (one round, no picks) another
    training seed."""
    value = cfg.al.get("replicate") or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"al.replicate={value!r} must be an integer >= 0")
    return value


def train_seed(cfg: DictConfig, round_index: int) -> int:
    """Round ``round_index``'s training seed; a full-data replicate trains from another."""
    seed = round_seed(cfg.seed, round_index)
    return seed + 10**7 * replicate(cfg) if full_data(cfg) else seed


def _reopen_last_round(
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
    callback = _acquisition_callback(cfg, strategy, run_dir, r)
    trainer = make_trainer(cfg, int(last.get("steps") or 1), [callback], has_val=False)
    trainer.test(model, datamodule=dm, verbose=False)
    last["selected"] = callback.selected
    last["scores"] = callback.scores
    last["acquire_seconds"] = round(callback.seconds, 3)
    last["uncertainty_maps"] = list(last.get("uncertainty_maps", [])) + [
        str(Path(p).relative_to(run_dir)) for p in callback.maps
    ]
    results["finished"] = False


@dataclass
class Round:
    """One round's outcome: its record (JSON-ready), the trained model and the acquisition."""

    record: RoundRecord
    fit: RoundFit
    acquisition: AcquisitionCallback


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
    callback = _acquisition_callback(cfg, strategy, run_dir, r, k=k, reveal=reveal)
    labelled = list(dm.labelled)
    labelled_pixels = dm.labelled_pixels()
    seed = train_seed(cfg, r)
    steps = round_steps(cfg, previous is not None)
    callbacks = ([callback] if k and dm.test else []) + list(extra_callbacks or [])

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
        trainer.test(model, datamodule=dm, verbose=False)  # the callback picks at its end
    elif k:
        callback.score_and_pick(dm, model)
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
        selected=callback.selected,
        scores=callback.scores,
        test=model.test_metrics if dm.test else None,
        train_loss=fit.train_loss,
        **fit_record(fit),
        fine_tuned_from=None if previous is None else _relative(previous, run_dir),
        checkpoint=_relative(checkpoint, run_dir),
        train_seconds=round(fit.seconds, 3),
        acquire_seconds=round(callback.seconds, 3),
        correction=callback.correction,
        uncertainty_maps=[_relative(Path(p), run_dir) for p in callback.maps],
    )
    if sharing is not None:
        record["shared_first_round"] = sharing
    return Round(record, fit, callback)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _rounds(
    cfg: DictConfig,
    run_dir: Path,
    dm: ActiveDataModule,
    strategy: Strategy,
    results: Results,
    logger: Any,
) -> None:
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    start = len(results["rounds"])
    cache = cfg.al.get("first_round_cache")
    for r in range(start, cfg.al.rounds):
        last = r == cfg.al.rounds - 1 or not dm.unlabelled
        fine_tune = r > 0 and not cfg.al.reinit
        share = cache and r == 0 and dm.unlabelled  # a run with nothing to pick shares nothing
        done = active_round(
            cfg,
            dm,
            strategy,
            r,
            k=0 if last else per_round(cfg, r),
            run_dir=run_dir,
            checkpoint=ckpt_dir / f"round-{r}.ckpt",
            previous=ckpt_dir / f"round-{r - 1}.ckpt" if fine_tune else None,
            shared=(
                entry_dir(cache, results["config"], results["splits"], data_digest(dm))
                if share
                else None
            ),
        )
        record, fit, callback = done.record, done.fit, done.acquisition
        for key in ("checkpoint", "fine_tuned_from"):  # only the last checkpoint is kept
            record.pop(key)
        before = results["rounds"][-1].get("correction_total") if results["rounds"] else None
        if record.get("correction") or before:  # running totals of the correction effort
            now, before = record.get("correction") or {}, before or {}
            record["correction_total"] = {k: before.get(k, 0) + now.get(k, 0) for k in now | before}
        # checkpoint first (active_round), then the results that point at it, then drop the
        # older checkpoint
        results["rounds"].append(record)
        results["finished"] = last
        atomic_write_json(run_dir / RESULTS, results)
        write_selection_csv(run_dir / "selection.csv", results, dm)
        for old in ckpt_dir.glob("round-*.ckpt"):
            if old.name != f"round-{r}.ckpt":
                old.unlink()
        log_round(logger, record, callback.maps)
        test_dice = record["test"]["dice"] if record["test"] else float("nan")
        log.info(
            "round %d | labelled %d (%.1f%% of pixels) | test dice %.4f | train %.1fs "
            "(%d steps, %d restarts) | acquire %.1fs | picked %s",
            r,
            len(record["labelled"]),
            100 * record["labelled_fraction"],
            test_dice,
            fit.seconds,
            fit.steps,
            fit.restarts,
            callback.seconds,
            ",".join(callback.selected) or "-",
        )
        if results["finished"]:
            break


def write_selection_csv(path: Path, results: Results, dm: ActiveDataModule) -> None:
    """One row per pick: what an annotator works through (the unit's image and box, its score)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["round", "unit", "image_id", "x", "y", "width", "height", "subject", "score"])
    for record in results["rounds"]:
        for unit_id in record["selected"]:
            unit = dm.units.get(unit_id) or Unit.parse(unit_id, dm.shapes)
            score = record["scores"].get(unit_id)
            writer.writerow(
                [
                    record["round"],
                    unit_id,
                    unit.image,
                    unit.x,
                    unit.y,
                    unit.w,
                    unit.h,
                    dm.samples[unit.image].subject,
                    "" if score is None else f"{score:.6g}",
                ]
            )
    atomic_write(path, buf.getvalue())
