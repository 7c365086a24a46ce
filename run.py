"""Run one active-learning simulation: ``python run.py dataset=tem strategy=mc_dropout``.

``python run.py --help`` says what a run does, where the data comes from, and every setting.
Bad data or settings end with one paragraph on stderr (and in the run's ``run.log``) and exit
code 1; ``HYDRA_FULL_ERROR=1`` shows the traceback instead. In a multirun (``-m``) a failing
job is logged and recorded in ``<job dir>/error.txt`` while the other jobs go on.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from axal.interrupt import Interrupted, stop_on_signals
from axal.rundir import die_with_parent, register_resolvers

log = logging.getLogger("axal")
register_resolvers()  # ${axal.uid:}, ${axal.run_dir:...} in hydra.run.dir, before @hydra.main


def _threads(cfg: DictConfig) -> int | None:
    """Threads per job: as configured, else the usable CPUs (affinity, cgroup quota) shared
    among parallel joblib jobs; a user's ``OMP_NUM_THREADS`` wins over that default."""
    from axal.threads import usable_cpus

    if cfg.trainer.get("num_threads"):
        return int(cfg.trainer.num_threads)
    cores = usable_cpus()
    launcher = HydraConfig.get().launcher
    if "joblib" in str(launcher.get("_target_", "")).lower():
        n_jobs = int(launcher.get("n_jobs") or -1)
        n_jobs = cores if n_jobs < 1 else n_jobs
        return max(1, cores // n_jobs)
    return None if os.environ.get("OMP_NUM_THREADS") else cores


def resume_command(run_dir: str | Path) -> str:
    """The one line that continues this run: the same overrides, plus ``resume=<run dir>``."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    return " ".join(["python run.py", *overrides, f"resume={run_dir}"])


def summary(results: dict, run_dir: str | Path) -> str:
    """The lines a run ends with: what it did, where its files are, and what to do next."""
    from axal.results import RESULTS

    rounds = results.get("rounds") or []
    dice = (rounds[-1].get("test") or {}).get("dice") if rounds else None
    lines = [
        f"done: {len(rounds)} round(s)"
        + (f", final test Dice {dice:.4f}" if isinstance(dice, float) else ""),
        f"  run folder:   {run_dir}",
        f"  results:      {Path(run_dir) / RESULTS}",
    ]
    wandb_dir = Path(run_dir) / "wandb"
    if wandb_dir.is_dir():
        lines.append(f"  W&B (offline runs): wandb sync {wandb_dir}/offline-run-*")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from axal import errors
    from axal.console import quiet_console
    from axal.simulation import run

    die_with_parent()  # a sweep's job goes when its sweep goes
    stop_on_signals()  # SIGTERM (SLURM, timeout) stops a run as Ctrl-C does
    quiet_console()  # after axal's imports: Lightning adds its handler when imported
    hc = HydraConfig.get()
    run_dir = cfg.resume or hc.runtime.output_dir
    multirun = hc.mode == RunMode.MULTIRUN
    threads = _threads(cfg)
    if threads:
        import torch

        torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)
    try:
        results = run(cfg, run_dir)
    except (errors.AxalError, OSError) as err:  # bad settings, unwritable folder, full disk
        if errors.full_error():
            raise
        text = errors.report(err, log)
        if not multirun:
            sys.exit(1)
        Path(hc.runtime.output_dir, "error.txt").write_text(text + "\n")
        return float("nan")
    except (KeyboardInterrupt, Interrupted) as err:
        code = err.code if isinstance(err, Interrupted) else 130
        name = err if isinstance(err, Interrupted) else "SIGINT"
        log.error("stopped by %s; results.json keeps finished: false. Resume with:", name)
        print(resume_command(run_dir), file=sys.stderr, flush=True)
        sys.exit(code)
    except Exception as err:
        if not multirun:  # Hydra prints the traceback; the run log gets it too
            errors.log_to_files(log, logging.ERROR, "run failed", exc_info=sys.exc_info())
            raise
        # one failing job must not take the sweep down
        log.error("job %s failed: %s", hc.job.override_dirname, err)
        Path(hc.runtime.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(hc.runtime.output_dir) / "error.txt").write_text(traceback.format_exc())
        return float("nan")
    rounds = results["rounds"]
    if not multirun:
        log.info("%s", summary(results, run_dir))
    return rounds[-1]["test"]["dice"] if rounds else float("nan")


if __name__ == "__main__":
    from axal.errors import quote_spaces

    sys.argv[1:] = quote_spaces(sys.argv[1:])
    main()
