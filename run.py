"""Run one active-learning simulation: ``python run.py dataset=tem strategy=mc_dropout``.

In a multirun (``-m``) a failing job is logged and recorded in ``<job dir>/error.txt`` while
the other jobs go on; a single run fails loudly.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from axal.rundir import register_resolvers

log = logging.getLogger("axal")
register_resolvers()  # ${axal.uid:}, ${axal.run_dir:...} in hydra.run.dir, before @hydra.main


def _threads(cfg: DictConfig) -> int | None:
    """Threads per job: as configured, else the cores shared among parallel joblib jobs."""
    if cfg.trainer.get("num_threads"):
        return int(cfg.trainer.num_threads)
    launcher = HydraConfig.get().launcher
    if "joblib" in str(launcher.get("_target_", "")).lower():
        n_jobs = int(launcher.get("n_jobs") or -1)
        cores = os.cpu_count() or 1
        n_jobs = cores if n_jobs < 1 else n_jobs
        return max(1, cores // n_jobs)
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from axal.loop import run

    hc = HydraConfig.get()
    run_dir = cfg.resume or hc.runtime.output_dir
    threads = _threads(cfg)
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)
    if hc.mode != RunMode.MULTIRUN:
        results = run(cfg, run_dir)
    else:
        try:
            results = run(cfg, run_dir)
        except Exception as err:  # one failing job must not take the sweep down
            log.error("job %s failed: %s", hc.job.override_dirname, err)
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "error.txt").write_text(traceback.format_exc())
            return float("nan")
    rounds = results["rounds"]
    return rounds[-1]["test"]["dice"] if rounds else float("nan")


if __name__ == "__main__":
    main()
