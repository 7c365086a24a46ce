"""Experiment loggers (W&B, CSV, none) for per-round metrics against the labelled count.

W&B defaults to offline unless an API key is configured, so a run never stops at a login prompt;
``wandb sync`` uploads offline runs later. Each run is finished before the next Hydra job starts.
"""

from __future__ import annotations

import logging
import os
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
) -> Logger | None:
    """Build the Lightning logger that ``logger.kind`` names (wandb, csv or none)."""
    kind = (cfg or {}).get("kind", "none")
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
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
    experiment.define_metric("n_labelled")
    experiment.define_metric("test/*", step_metric="n_labelled")
    experiment.define_metric("round/*", step_metric="n_labelled")
    return logger


def log_round(logger: Logger | None, record: dict[str, Any], maps: list[str]) -> None:
    """Log one round's test metrics and timings, keyed by the number of labelled images."""
    if logger is None:
        return
    metrics: dict[str, float] = {"n_labelled": record["n_labelled"], "round": record["round"]}
    test = record.get("test") or {}
    metrics.update({f"test/{k}": v for k, v in test.items() if v is not None})
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
