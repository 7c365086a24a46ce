"""The report's figures: learning curves with bands, and uncertainty maps across rounds.

Object-oriented matplotlib (no pyplot), so the user's backend is left alone."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from axal.report.summary import _group, _rkey, _seed_key
from axal.report.tables import _num


# --------------------------------------------------------------------------------------------
# Figures (object-oriented matplotlib: no pyplot, so the user's backend is left alone)
# --------------------------------------------------------------------------------------------
def _learning_curve_figure(summary: dict):
    from matplotlib.figure import Figure

    names = list(summary["datasets"])
    ncols = max(1, len(names))
    fig = Figure(figsize=(5.2 * ncols, 4.2), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    all_strats = sorted(
        {s for d in summary["datasets"].values() for s in d["strategies"] if s != d["baseline"]}
    )
    palette = {s: f"C{i % 10}" for i, s in enumerate(all_strats)}
    for ax, ds in zip(axes, names, strict=False):
        d = summary["datasets"][ds]
        for st, s in d["strategies"].items():
            pts = sorted(s["dice_by_budget"].items(), key=lambda kv: float(kv[0]))
            if not pts:
                continue
            x = np.array([float(k) for k, _ in pts])
            m = np.array([_num(v["mean"]) for _, v in pts])
            lo = np.array([_num(v["ci_low"]) for _, v in pts])
            hi = np.array([_num(v["ci_high"]) for _, v in pts])
            color = "k" if st == d["baseline"] else palette[st]
            ax.plot(
                x,
                m,
                marker="o",
                ms=3,
                color=color,
                label=f"{st} (n={s['n_seeds']} seeds)",
                lw=2.2 if st == d["baseline"] else 1.6,
                ls="--" if st == d["baseline"] else "-",
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
        full = [v for v in d["full_data"]["per_seed"].values() if v is not None]
        if full:
            label = (
                "full-data Dice"
                if d["full_data"]["source"] == "full_pool"
                else ("random's final Dice (fallback)")
            )
            ax.axhline(float(np.mean(full)), color="0.4", lw=0.8, ls=":", label=label)
        seeds = sorted({s["n_seeds"] for s in d["strategies"].values()})
        seeds_txt = "/".join(str(n) for n in seeds)
        ax.set_title(f"{ds}: test Dice, mean ± 95% CI over {seeds_txt} seeds", fontsize=10)
        ax.set_xlabel("number of labelled images")
        ax.set_ylabel("test Dice")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no test Dice recorded", ha="center", transform=ax.transAxes)
    return fig


def _run_maps(run: Mapping) -> dict[str, list[str]]:
    """round -> map paths: a top-level ``uncertainty_maps`` or the rounds' own lists."""
    top = run.get("uncertainty_maps")
    if top:
        return dict(top)
    return {
        str(r.get("round")): list(r["uncertainty_maps"])
        for r in run.get("rounds", [])
        if r.get("uncertainty_maps")
    }


def _uncertainty_entries(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """dataset -> strategy -> {seed, rounds: [(round, [Path])]} for the lowest-seed run."""
    groups, _ = _group(runs)
    out: dict[str, dict[str, dict]] = {}
    for ds, strategies in sorted(groups.items()):
        for st, per in sorted(strategies.items()):
            with_maps = [s for s, r in per.items() if _run_maps(r)]
            if not with_maps:
                continue
            seed = min(with_maps, key=_seed_key)
            run = per[seed]
            base = Path(run.get("_path", ".")).parent
            items = []
            for rnd, files in sorted(_run_maps(run).items(), key=lambda kv: _rkey(kv[0])):
                files = [files] if isinstance(files, str) else list(files or [])
                items.append((rnd, [base / f for f in files]))
            out.setdefault(ds, {})[st] = {"seed": seed, "rounds": items}
    return out


def _uncertainty_figure(entries: dict[str, dict[str, dict]]):
    """Grid (strategy rows x rounds) of the first map per round; None if nothing readable."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    rows = [(ds, st, e) for ds, sts in entries.items() for st, e in sts.items()]
    if not rows:
        return None
    ncols = max(len(e["rounds"]) for _, _, e in rows)
    fig = Figure(figsize=(2.2 * ncols, 2.3 * len(rows)), layout="constrained")
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
            ax.set_title(f"round {rnd}", fontsize=8)
            shown += 1
        axes[i][0].text(
            -0.08,
            0.5,
            f"{ds}/{st}\nseed {e['seed']}",
            transform=axes[i][0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
        )
    return fig if shown else None


def _fig_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    return buf.getvalue()
