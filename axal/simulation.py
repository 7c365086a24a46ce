"""The simulation: rounds of train -> test -> acquire, recorded in results.json.

Each round is :func:`axal.rounds.active_round`; here the annotator reveals the picks'
ground-truth masks at once. After every round ``results.json`` (:mod:`axal.results`) and the
round's checkpoint are written atomically, so a run killed in round k loses at most round k and
``resume=<run dir>`` continues from there.

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
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from axal.acquisition import Strategy
from axal.atomic import atomic_write, atomic_write_json
from axal.data import check_foreground
from axal.domain import TASKS
from axal.environment import environment
from axal.errors import ConfigError
from axal.first_round import data_digest, entry_dir
from axal.pools import ActiveDataModule, Unit
from axal.results import CONTRACT_KEYS, RESULTS, Results
from axal.rounds import active_round, per_round, reopen_last_round
from axal.rundir import (
    RunLock,
    check_fresh,
    check_resume_dir,
    compare_configs,
    write_config,
)
from axal.settings import (
    check_config,
    load_samples,
    make_splits,
    make_strategy,
    replicate,
    run_label,
    strategy_label,
)
from axal.tracking import finish, log_round, make_logger

log = logging.getLogger("axal")


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
            reopen_last_round(cfg, run_dir, dm, strategy, results, n_classes)
        written = write_config(run_dir, config_yaml, "resume")
        results["config"] = OmegaConf.to_container(cfg, resolve=True)
        results.setdefault("resumes", []).append(
            {
                "at": dt.datetime.now().isoformat(timespec="seconds"),
                "from_round": done,
                "config": written.name,
                "changed": changes,
                "environment": environment(),
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
        environment=environment(),
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
        record, fit, acquisition = done.record, done.fit, done.acquisition
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
        log_round(logger, record, acquisition.maps)
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
            acquisition.seconds,
            ",".join(acquisition.selected) or "-",
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
