"""The report's figures: learning curves with bands, and uncertainty maps across rounds.

Object-oriented matplotlib (no pyplot), so the user's backend is left alone.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axal.report.ordering import natural_key
from axal.report.statistics import FRACTION, N_LABELLED, interpolate_at, learning_curve, t_interval
from axal.report.summary import _group
from axal.report.tables import _num

MAP_NAME = re.compile(r"round-(\d+)_(picked|fixed)_(.+)\.(?:png|svg)$", re.IGNORECASE)
# rounds shown per strategy in the evolution figure (evenly spaced): with 4, the figure is
# about as wide as the report's page (1200 px), so the browser does not shrink its text
MAX_MAP_ROUNDS = 4
MAP_DPI = 90  # the evolution figure's resolution in the report


BUDGET_TICKS = [0.5, 1, 2, 5, 10, 20, 50, 100]  # % of the pool's pixels


def learning_curve_figure(summary: dict):
    """One panel per (dataset, unit) group: mean test Dice with 95% bands, full-data line.

    Image studies put labelled images on x with integer ticks; tile studies the labelled
    pixels as a percentage of the pool. The full-data reference is a dotted line with its
    95% band, never a curve: it has one budget (everything).
    """
    from matplotlib.figure import Figure

    names = list(summary["datasets"])
    ncols = max(1, len(names))
    fig = Figure(figsize=(5.4 * ncols, 4.4), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    all_strats = sorted(
        {s for d in summary["datasets"].values() for s in d["strategies"] if s != d["baseline"]}
    )
    palette = {s: f"C{i % 10}" for i, s in enumerate(all_strats)}
    for ax, ds in zip(axes, names, strict=False):
        d = summary["datasets"][ds]
        tile = d.get("budget_axis", N_LABELLED) == FRACTION
        scale = 100.0 if tile else 1.0
        for st, s in d["strategies"].items():
            c = s.get("curve") or {}
            if not c.get("x"):
                continue
            x = scale * np.array(c["x"], dtype=float)
            m = np.array([_num(v) for v in c["mean"]])
            lo = np.array([_num(v) for v in c["ci_low"]])
            hi = np.array([_num(v) for v in c["ci_high"]])
            base = st == d["baseline"]
            color = "k" if base else palette[st]
            ax.plot(
                x,
                m,
                marker="" if tile else "o",
                ms=3,
                color=color,
                label=f"{st} (n={s['n_seeds']} seeds)",
                lw=2.2 if base else 1.6,
                ls="--" if base else "-",
            )
            band = np.isfinite(lo) & np.isfinite(hi)
            if band.any():
                ax.fill_between(
                    x,
                    # Dice lives in [0, 1]: a t-band over few seeds can overshoot it
                    np.where(band, np.clip(lo, 0.0, 1.0), np.nan),
                    np.where(band, np.clip(hi, 0.0, 1.0), np.nan),
                    color=color,
                    alpha=0.18,
                    lw=0,
                )
        _full_data_line(ax, d)
        seeds = sorted({s["n_seeds"] for s in d["strategies"].values()})
        seeds_txt = "/".join(str(n) for n in seeds) or "0"
        ax.set_title(f"{ds}: test Dice, mean ± 95% CI over {seeds_txt} seeds", fontsize=10)
        _budget_axis(ax, tile, "labelled pixels (% of pool, log scale)")
        ax.set_ylabel("test Dice")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no test Dice recorded", ha="center", transform=ax.transAxes)
    return fig


_learning_curve_figure = learning_curve_figure  # the name before the report was split


def paired_differences(summary: dict, runs: list[dict]) -> dict[str, dict[str, dict]]:
    """group -> strategy -> {x, mean, ci_low, ci_high, n}: the strategy's test Dice minus
    random's on the same seed, at the budgets of the strategy's learning curve (exact image
    counts, or interpolated pixel fractions), mean and 95% t-interval over the paired seeds.

    Only the strategies the summary kept (few-seed ones are left out there) and seeds that
    both the strategy and the baseline ran.
    """
    groups, _ = _group(runs)
    out: dict[str, dict[str, dict]] = {}
    for ds, d in summary["datasets"].items():
        base = d.get("baseline")
        if base is None or base not in groups.get(ds, {}):
            continue
        budget = d.get("budget_axis", N_LABELLED)
        for st, s in d["strategies"].items():
            per = groups[ds].get(st, {})
            seeds = [k for k in per if k in groups[ds][base]]
            xs = [float(x) for x in (s.get("curve") or {}).get("x", [])]
            if st == base or not seeds or not xs:
                continue
            diffs = np.array(
                [
                    _curve_at(per[k], budget, xs) - _curve_at(groups[ds][base][k], budget, xs)
                    for k in sorted(seeds, key=natural_key)
                ]
            )
            cur: dict[str, list] = {"x": [], "mean": [], "ci_low": [], "ci_high": [], "n": []}
            for j, x in enumerate(xs):
                v = diffs[:, j][np.isfinite(diffs[:, j])]
                if not v.size:
                    continue
                lo, hi = t_interval(v)
                for key, value in zip(cur, (x, float(v.mean()), lo, hi, int(v.size))):
                    cur[key].append(value)
            if cur["x"]:
                out.setdefault(ds, {})[st] = cur
    return out


def _curve_at(run: Mapping, budget: str, xs: list[float]) -> np.ndarray:
    """A run's test Dice at budgets ``xs``: recorded there (images) or interpolated (pixels)."""
    x, y = learning_curve(run, budget=budget)
    if budget == N_LABELLED:
        return np.array([float(y[x == b][-1]) if (x == b).any() else np.nan for b in xs])
    return interpolate_at(x, y, xs)


def paired_difference_figure(summary: dict, diffs: dict[str, dict[str, dict]]):
    """One panel per (group, strategy), side by side with a shared Dice axis: the strategy's
    paired difference from random against the budget, its mean with the 95% band, and the
    zero line (no difference). Separate panels keep overlapping bands readable. None when
    nothing is paired."""
    from matplotlib.figure import Figure

    panels = [(ds, st) for ds in summary["datasets"] for st in diffs.get(ds, {})]
    if not panels:
        return None
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(3.4 * ncols + 0.6, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    all_strats = sorted(
        {s for d in summary["datasets"].values() for s in d["strategies"] if s != d["baseline"]}
    )
    palette = {s: f"C{i % 10}" for i, s in enumerate(all_strats)}
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax, (ds, st) in zip(axes, panels, strict=False):
        d, c = summary["datasets"][ds], diffs[ds][st]
        tile = d.get("budget_axis", N_LABELLED) == FRACTION
        scale = 100.0 if tile else 1.0
        ax.axhline(0.0, color="k", lw=1.0, ls="--")
        x = scale * np.array(c["x"], dtype=float)
        m = 100.0 * np.array(c["mean"], dtype=float)
        lo = 100.0 * np.array([_num(v) for v in c["ci_low"]])
        hi = 100.0 * np.array([_num(v) for v in c["ci_high"]])
        color = palette.get(st, "C0")
        ax.plot(x, m, marker="" if tile else "o", ms=3, color=color, lw=1.8)
        band = np.isfinite(lo) & np.isfinite(hi)
        if band.any():
            ax.fill_between(
                x, np.where(band, lo, np.nan), np.where(band, hi, np.nan),
                color=color, alpha=0.2, lw=0,
            )  # fmt: skip
        ax.set_title(f"{ds}: {st} − {d['baseline']}\n(n={max(c['n'])} paired seeds)", fontsize=10)
        _budget_axis(ax, tile, "labelled pixels (% of pool)")
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("Dice points vs random (paired)")
    return fig


def _full_data_line(ax: Any, d: dict) -> None:
    """The full-data reference (mean, 95% band), or the fallback's mean as a dotted line."""
    full = d["full_data"]
    ref = full.get("reference")
    if ref and ref.get("mean") is not None:
        lo, hi = _num(ref.get("ci_low")), _num(ref.get("ci_high"))
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axhspan(max(lo, 0.0), min(hi, 1.0), color="0.5", alpha=0.15, lw=0)
        ax.axhline(
            float(ref["mean"]),
            color="0.3",
            lw=1.0,
            ls=":",
            label=f"full data (n={ref['n_seeds']} seeds)",
        )
        return
    values = [v for v in full["per_seed"].values() if v is not None]
    if values:
        label = (
            "full-data Dice (runs that labelled the whole pool)"
            if full["source"] == "full_pool"
            else "random's final Dice (fallback)"
        )
        ax.axhline(float(np.mean(values)), color="0.4", lw=0.8, ls=":", label=label)


def _run_maps(run: Mapping) -> list[tuple[str, list[Path]]]:
    """(round, map paths beside the run's results.json) in round order: a top-level
    ``uncertainty_maps`` or the rounds' own lists."""
    top = run.get("uncertainty_maps") or {
        str(r.get("round")): r["uncertainty_maps"]
        for r in run.get("rounds", [])
        if r.get("uncertainty_maps")
    }
    base = Path(run.get("_path", ".")).parent
    return [
        (rnd, [base / f for f in ([files] if isinstance(files, str) else list(files or []))])
        for rnd, files in sorted(dict(top).items(), key=lambda kv: natural_key(kv[0]))
    ]


def _uncertainty_entries(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """dataset -> strategy -> {seed, rounds: [(round, [Path])]}: the lowest seed with maps here."""
    groups, _ = _group(runs)
    out: dict[str, dict[str, dict]] = {}
    for ds, strategies in sorted(groups.items()):
        for st, per in sorted(strategies.items()):
            maps = {s: m for s, r in per.items() if (m := _run_maps(r))}
            if not maps:
                continue
            # maps are not committed with a sweep: show the lowest seed whose files are here
            here = [s for s, m in maps.items() if any(f.is_file() for _, fs in m for f in fs)]
            seed = min(here or maps, key=natural_key)
            out.setdefault(ds, {})[st] = {
                "seed": seed,
                "rounds": maps[seed],
                "measure": measure_name(per[seed]),
            }
    return out


def measure_name(run: Mapping) -> str:
    """What a run's uncertainty maps show: the run's ``measure``, else its strategy's.

    Old runs do not record it; their strategy class (an ``axal.acquisition`` target in the
    run's config, nothing else is imported) is built from the config to ask it.
    """
    if run.get("measure"):
        return str(run["measure"])
    cfg = dict(((run.get("config") or {}).get("strategy")) or {})
    target = str(cfg.pop("_target_", ""))
    module, _, cls_name = target.rpartition(".")
    if module == "axal.acquisition":
        try:
            from axal import acquisition

            cls = getattr(acquisition, cls_name, None)
            if isinstance(cls, type) and issubclass(cls, acquisition.Strategy):
                return str(cls(**cfg).measure)
        except (ImportError, TypeError, ValueError):
            pass
    return "uncertainty"


def map_caption(path: str | Path) -> tuple[str, str]:
    """(role, image id) of a saved map from its name ``round-XX_<picked|fixed>_<id>.png``."""
    m = MAP_NAME.search(Path(path).name)
    return (m.group(2), m.group(3)) if m else ("", Path(path).stem)


def _spread(items: list, k: int) -> list:
    """At most k items, evenly spaced, first and last kept."""
    if len(items) <= k:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def uncertainty_figure(entries: dict[str, dict[str, dict]]):
    """Grid (strategy rows x rounds) of the first map (the pick) per round; None if none.

    At most ``MAX_MAP_ROUNDS`` rounds per strategy, evenly spaced; each cell names its round,
    role (picked / fixed) and image id, each row its strategy, seed and uncertainty measure.
    """
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    rows = [
        (ds, st, {**e, "rounds": _spread(e["rounds"], MAX_MAP_ROUNDS)})
        for ds, sts in entries.items()
        for st, e in sts.items()
    ]
    if not rows:
        return None
    ncols = max(len(e["rounds"]) for _, _, e in rows)
    fig = Figure(figsize=(2.9 * ncols + 1.6, 1.75 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    shown = 0
    for i, (ds, st, e) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            ax.set_axis_off()
            if j >= len(e["rounds"]):
                continue
            rnd, files = e["rounds"][j]
            readable = [f for f in files if f.is_file()]
            if not readable:
                continue
            try:
                img = imread(readable[0])
            except (OSError, ValueError, SyntaxError):
                continue
            ax.imshow(img, cmap="magma" if img.ndim == 2 else None)
            role, image_id = map_caption(readable[0])
            ax.set_title(f"round {rnd} · {role}\n{image_id}", fontsize=9)
            shown += 1
        measure = "\n".join(textwrap.wrap(e.get("measure", "uncertainty"), 20))
        axes[i][0].text(
            -0.04,
            0.5,
            f"{ds}/{st}\nseed {e['seed']}\n{measure}",
            transform=axes[i][0].transAxes,
            ha="right",
            va="center",
            fontsize=9,
        )
    return fig if shown else None


_uncertainty_figure = uncertainty_figure  # the name before the report was split


def _fig_bytes(fig: Any, fmt: str, dpi: int = 120) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def _budget_axis(ax: Any, tile: bool, pixel_label: str) -> None:
    """The budget axis: labelled images, or for tiles labelled pixels on a log axis (budgets
    grow geometrically, 2, 4, 8, 16 tiles...: a log axis shows the small budgets, where
    strategies differ, as wide as the large ones)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, PercentFormatter

    if not tile:
        ax.set_xlabel("labelled images")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    ax.set_xscale("log")
    lo_x, hi_x = ax.get_xlim()
    ax.xaxis.set_major_locator(
        FixedLocator([t for t in BUDGET_TICKS if lo_x <= t <= hi_x] or BUDGET_TICKS)
    )
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lo_x, hi_x)
    ax.set_xlabel(pixel_label)
    ax.xaxis.set_major_formatter(PercentFormatter(100.0, decimals=None))
