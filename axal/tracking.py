"""Experiment loggers (W&B, CSV, none) for per-round metrics against the labelled count.

W&B defaults to offline unless an API key is configured, so a run never stops at a login prompt;
``wandb sync`` uploads offline runs later. Each run is finished before the next Hydra job starts.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

log = logging.getLogger(__name__)


def wandb_mode(mode: str | None) -> str:
    """``online`` only when asked for or when an API key is configured; else ``offline``."""
    if mode in ("online", "offline", "disabled"):
        return mode
    if mode not in (None, "auto"):
        raise ValueError(f"logger.mode={mode!r} must be auto, online, offline or disabled")
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def make_logger(
    cfg: dict[str, Any] | None,
    run_dir: Path,
    run_config: dict[str, Any],
    name: str,
    group: str,
    tags: list[str],
    step_metric: str = "n_labelled",
) -> Logger | None:
    """Build the Lightning logger that ``logger.kind`` names (wandb, csv or none)."""
    kind = (cfg or {}).get("kind", "none")
    if kind == "none":
        return None
    if kind == "csv":
        return _append_csv(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if kind != "wandb":
        raise ValueError(f"logger={kind!r} is not one of wandb, csv, none")
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(cfg.get("mode"))
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=cfg.get("project", "axal"),
        entity=cfg.get("entity"),
        group=group,
        name=name,
        tags=tags,
        save_dir=str(run_dir),
        mode=mode,
        config=run_config,
        reinit="finish_previous",
    )
    experiment = logger.experiment
    if mode == "offline":
        log.info(
            "W&B logs offline to %s (no API key); upload it later with: wandb sync %s",
            experiment.dir,
            Path(experiment.dir).parent,
        )
    # the x axis of every chart: labelled units, or the labelled share of the pool's pixels
    experiment.define_metric(step_metric)
    experiment.define_metric("test/*", step_metric=step_metric)
    experiment.define_metric("round/*", step_metric=step_metric)
    return logger


def _append_csv(logger: CSVLogger) -> CSVLogger:
    """Keep an earlier ``metrics.csv`` (a resumed run): Lightning's writer deletes it on start."""
    path = Path(logger.log_dir) / "metrics.csv"
    old = path.read_bytes() if path.is_file() else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        writer = logger.experiment
    if old:
        path.write_bytes(old)
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        writer.metrics_keys = sorted(header)
    return logger


def log_round(logger: Logger | None, record: dict[str, Any], maps: list[str]) -> None:
    """Log one round's test metrics and timings, keyed by the labelled units and pixel share."""
    if logger is None:
        return
    metrics: dict[str, float] = {"n_labelled": record["n_labelled"], "round": record["round"]}
    if record.get("labelled_fraction") is not None:
        metrics["labelled_fraction"] = record["labelled_fraction"]
    test = record.get("test") or {}  # a real annotation round has no test set
    metrics.update({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))})
    for key, value in (record.get("correction_total") or {}).items():  # effort so far
        metrics[f"correction/{key}"] = value
    metrics["round/restarts"] = record.get("restarts", 0)
    metrics["round/train_seconds"] = record["train_seconds"]
    metrics["round/acquire_seconds"] = record["acquire_seconds"]
    logger.log_metrics(metrics, step=record["round"])
    if maps and hasattr(logger, "log_image"):
        logger.log_image(key="uncertainty_maps", images=maps, step=record["round"])
    logger.save()


def finish(logger: Logger | None, status: str = "success") -> None:
    """Close the run (uploads nothing when offline) so the next Hydra job starts a fresh one."""
    if logger is None:
        return
    logger.finalize(status)
    if type(logger).__name__ == "WandbLogger":
        import wandb

        wandb.finish(exit_code=0 if status == "success" else 1)
