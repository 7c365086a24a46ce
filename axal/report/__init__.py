"""Comparison report for active-learning runs, computed from their ``results.json`` files.

The report answers "which acquisition strategy saves labels, and how sure are we?": learning
curves with confidence bands, normalised area under the learning curve (ALC), the budget
needed to reach 95%/100% of the full-data Dice, and paired-by-seed statistics against random
sampling (Wilcoxon with Holm, bootstrap ratio intervals, minimum detectable ALC difference),
per (dataset, annotation unit) group: images on the budget axis for image studies, the
labelled-pixel fraction for tile studies. Everything is written atomically into one folder;
``report.html`` is self-contained (offline) and defines every column it shows.

Modules: ``statistics`` (curves and tests), ``summary`` (loading, grouping, ``summarize``),
``tables`` (markdown/CSV tables and their definitions), ``figures``, ``html``, and ``picks``
(what each strategy picked, from the dataset's masks; a command of its own); this package
re-exports the public names that ``axal.report`` had before it was split.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from axal.atomic import atomic_write
from axal.report.figures import (
    MAP_DPI,
    _fig_bytes,
    _learning_curve_figure,
    _uncertainty_entries,
    _uncertainty_figure,
    learning_curve_figure,
    measure_name,
    paired_difference_figure,
    paired_differences,
    uncertainty_figure,
)
from axal.report.html import _html
from axal.report.statistics import (
    BOOTSTRAP_SEED,
    FRACTION,
    N_BOOTSTRAP,
    N_LABELLED,
    acquire_seconds,
    area_under_curve,
    bootstrap_ratio_ci,
    holm,
    interpolate_at,
    labels_to_reach,
    learning_curve,
    mde_paired,
    paired_wilcoxon,
    round_fraction,
    run_restarts,
    run_unit,
    t_interval,
)
from axal.report.summary import (
    BASELINE,
    FULL_ROW,
    TILE_BUDGETS,
    complete_seeds,
    group_key,
    load_runs,
    strategy_name,
    summarize,
)
from axal.report.tables import (
    SUMMARY_COLUMNS,
    SUMMARY_EXTRA_COLUMNS,
    _fmt_int,
    _markdown,
    _num,
    _summary_csv,
    _table_csv,
    definitions,
    main_table,
    stats_table,
    subject_tables,
)
from axal.results import FULL, RESULTS, is_full_run

__all__ = [
    "BASELINE",
    "BOOTSTRAP_SEED",
    "FRACTION",
    "FULL",
    "FULL_ROW",
    "N_BOOTSTRAP",
    "RESULTS",
    "SUMMARY_COLUMNS",
    "SUMMARY_EXTRA_COLUMNS",
    "TILE_BUDGETS",
    "N_LABELLED",
    "_fig_bytes",
    "_fmt_int",
    "_learning_curve_figure",
    "_markdown",
    "_num",
    "_summary_csv",
    "_table_csv",
    "_uncertainty_entries",
    "_uncertainty_figure",
    "acquire_seconds",
    "area_under_curve",
    "bootstrap_ratio_ci",
    "complete_seeds",
    "definitions",
    "group_key",
    "holm",
    "interpolate_at",
    "is_full_run",
    "labels_to_reach",
    "learning_curve",
    "learning_curve_figure",
    "load_runs",
    "main_table",
    "mde_paired",
    "measure_name",
    "paired_difference_figure",
    "paired_differences",
    "paired_wilcoxon",
    "round_fraction",
    "run_restarts",
    "run_unit",
    "stats_table",
    "strategy_name",
    "subject_tables",
    "summarize",
    "t_interval",
    "uncertainty_figure",
    "write_report",
]


def write_report(
    runs_or_dirs: Iterable[dict | str | Path] | str | Path,
    out_dir: str | Path,
    few_seeds: bool = False,
) -> dict:
    """Write figures, tables, stats, summary.{csv,json} and report.html; return the summary.

    ``runs_or_dirs`` is a list of loaded run dicts, or paths (results.json files or folders).
    A strategy with fewer seeds than the most-run one is left out (a note names it), unless
    ``few_seeds`` keeps it.
    """
    if isinstance(runs_or_dirs, (str, Path)):
        runs_or_dirs = [runs_or_dirs]
    items = list(runs_or_dirs)
    runs = [r for r in items if isinstance(r, dict)]
    paths = [p for p in items if not isinstance(p, dict)]
    if paths:
        runs += load_runs(paths)
    if not runs:
        raise ValueError("no runs to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    summary = summarize(runs, few_seeds=few_seeds)
    fig = learning_curve_figure(summary)
    curves_png = _fig_bytes(fig, "png")
    atomic_write(out / "learning_curves.png", curves_png)
    atomic_write(out / "learning_curves.svg", _fig_bytes(fig, "svg"))
    diff_fig = paired_difference_figure(summary, paired_differences(summary, runs))
    diff_png = _fig_bytes(diff_fig, "png") if diff_fig is not None else None
    if diff_png:
        atomic_write(out / "paired_difference.png", diff_png)
    maps = _uncertainty_entries(runs)
    maps_fig = uncertainty_figure(maps) if maps else None
    # the thumbnails are a preview (every map is also inlined full size): keep the file light
    maps_png = _fig_bytes(maps_fig, "png", dpi=MAP_DPI) if maps_fig is not None else None
    if maps_png:
        atomic_write(out / "uncertainty_maps.png", maps_png)
    elif (out / "uncertainty_maps.png").is_file():
        # the maps/ of committed runs are not committed: keep the figure an earlier build made
        maps_png = (out / "uncertainty_maps.png").read_bytes()

    atomic_write(out / "table.md", _markdown(summary))
    atomic_write(out / "table.csv", _table_csv(summary))
    atomic_write(out / "summary.csv", _summary_csv(summary))
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write(
        out / "report.html", _html(summary, curves_png, maps, maps_png, runs, out, diff_png)
    )
    return summary
