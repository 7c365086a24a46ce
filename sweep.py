"""Resumable sweeps over a named grid, then the comparison report.

    python sweep.py experiment=paper_tem                # run the grid, skip finished jobs, report
    python sweep.py experiment=tem_cpu sweep.jobs=2     # two jobs at a time
    python sweep.py experiment=quick seed=1 trainer.max_epochs=3   # extra overrides reach every job
    python sweep.py experiment=tem_tile sweep.launcher=slurm sweep.slurm.partition=gpu  # on SLURM
    python sweep.py report results/runs/tem --out results/tem     # report on existing runs
    python sweep.py report results/runs/tem --complete-seeds      # a study in progress
    python sweep.py list experiment=tem_tile_axonmyelin # the jobs and their state, none run

Unlike plain Hydra multirun, a killed sweep resumes where it stopped: every job has a fixed
directory, a job whose results.json says ``finished`` is skipped, and an unfinished one is
resumed from its last finished round. With ``sweep.launcher=slurm`` the jobs run as a SLURM job
array (submitit), with the same folders and resume; see docs/sweeps.md#slurm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from axal.sweep import main_list, main_report, main_sweep

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        parser = argparse.ArgumentParser(prog="sweep.py report", description=main_report.__doc__)
        parser.add_argument("dirs", nargs="+", type=Path, help="run folders or results.json files")
        parser.add_argument("--out", type=Path, default=None, help="report folder")
        parser.add_argument(
            "--include-unfinished", action="store_true", help="also runs still in progress"
        )
        parser.add_argument(
            "--complete-seeds",
            action="store_true",
            help="only the seeds on which every arm (and replicate) has finished",
        )
        args = parser.parse_args(sys.argv[2:])
        sys.exit(main_report(args.dirs, args.out, args.include_unfinished, args.complete_seeds))
    from axal.errors import quote_spaces

    if len(sys.argv) > 1 and sys.argv[1] == "list":
        sys.exit(main_list(quote_spaces(sys.argv[2:])))
    sys.exit(main_sweep(quote_spaces(sys.argv[1:])))
