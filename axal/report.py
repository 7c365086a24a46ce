"""Comparison report for active-learning runs, computed from their ``results.json`` files.

The report answers "which acquisition strategy saves labels, and how sure are we?": learning
curves with confidence bands, normalised area under the learning curve (ALC), labels needed to
reach 95%/100% of the full-data Dice, and paired-by-seed statistics against random sampling.
Everything is written atomically into one folder; ``report.html`` is self-contained (offline).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from axal.atomic import atomic_write

RESULTS_NAME = "results.json"
BASELINE = "random"
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
REQUIRED_KEYS = ("dataset", "strategy", "seed", "rounds")

SUMMARY_COLUMNS = [
    "dataset",
    "strategy",
    "n_seeds",
    "alc_mean",
    "alc_std",
    "labels_to_95_mean",
    "ratio_ci_low",
    "ratio_ci_high",
    "p_holm",
]
SUMMARY_EXTRA_COLUMNS = [
    "n_unfinished",
    "alc_n_min",
    "alc_n_max",
    "labels_to_95_std",
    "labels_to_95_censored",
    "labels_to_100_mean",
    "labels_to_100_censored",
    "saving_95",
    "ratio",
    "n_paired",
    "wilcoxon_p",
    "stats_note",
    "full_data_source",
    "acquire_seconds_mean",
]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _candidate_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories recursively so users can point at a whole sweep folder."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob(RESULTS_NAME)))
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such results file or directory")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def load_runs(paths: Iterable[str | Path]) -> list[dict]:
    """Load every run; unfinished runs are kept (their curves still count) but flagged.

    Each path is a ``results.json`` or a directory searched recursively for them. A file that
    is not valid JSON or lacks the contract keys raises ``ValueError`` naming the file, because
    silently dropping a run would bias the comparison.
    """
    runs = []
    for f in _candidate_files(paths):
        try:
            run = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{f}: unreadable or invalid results JSON ({exc})") from exc
        if not isinstance(run, dict):
            raise ValueError(  # noqa: TRY004 - the contract says bad files raise ValueError
                f"{f}: results JSON must be an object, got {type(run).__name__}"
            )
        missing = [k for k in REQUIRED_KEYS if k not in run]
        if missing:
            raise ValueError(f"{f}: results JSON lacks required key(s) {missing}")
        if not isinstance(run["rounds"], list) or not all(
            isinstance(r, dict) for r in run["rounds"]
        ):
            raise ValueError(f"{f}: 'rounds' must be a list of objects")
        run["_path"] = str(f)
        run["_finished"] = bool(run.get("finished", False))
        runs.append(run)
    return runs


def strategy_name(run: Mapping) -> str:
    """Display name: the variant ``label`` (e.g. 'bald+power') if present, else ``strategy``."""
    return str(run.get("label") or run["strategy"])


# --------------------------------------------------------------------------------------------
# Curve metrics
# --------------------------------------------------------------------------------------------
def learning_curve(run: Mapping, metric: str = "dice") -> tuple[np.ndarray, np.ndarray]:
    """(n_labelled, test metric) sorted by n_labelled; rounds without the metric are skipped."""
    pts = []
    for r in run.get("rounds", []):
        value = (r.get("test") or {}).get(metric)
        if value is None or r.get("n_labelled") is None:
            continue
        value = float(value)
        if math.isfinite(value):
            pts.append((float(r["n_labelled"]), value))
    pts.sort(key=lambda t: t[0])
    n = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    return n, y


def acquire_seconds(run: Mapping) -> float:
    """Mean seconds a round spent choosing images (rounds that chose some); nan if none did."""
    secs = [
        float(r["acquire_seconds"])
        for r in run.get("rounds", [])
        if r.get("selected") and r.get("acquire_seconds") is not None
    ]
    return float(np.mean(secs)) if secs else float("nan")


def area_under_curve(
    n: Sequence[float] | np.ndarray,
    dice: Sequence[float] | np.ndarray,
    n_min: float | None = None,
    n_max: float | None = None,
) -> float:
    """Normalised ALC: trapezoid of Dice over [n_min, n_max] divided by (n_max - n_min).

    Normalising makes it a mean Dice in [0, 1] so curves with different step sizes are
    comparable; restricting to a common range keeps longer runs from being favoured. The curve
    is linearly interpolated at the range ends; a range outside the curve raises ValueError.
    """
    n = np.asarray(n, dtype=float)
    y = np.asarray(dice, dtype=float)
    if n.shape != y.shape:
        raise ValueError("n and dice must have the same length")
    if n.size == 0:
        return float("nan")
    order = np.argsort(n, kind="stable")
    n, y = n[order], y[order]
    lo = float(n[0]) if n_min is None else float(n_min)
    hi = float(n[-1]) if n_max is None else float(n_max)
    if lo > hi:
        raise ValueError(f"empty budget range [{lo}, {hi}]")
    if lo < n[0] or hi > n[-1]:
        raise ValueError(f"range [{lo}, {hi}] exceeds the curve's budgets [{n[0]}, {n[-1]}]")
    if hi == lo:
        return float(np.interp(lo, n, y))
    inside = (n > lo) & (n < hi)
    xs = np.concatenate([[lo], n[inside], [hi]])
    ys = np.concatenate([[np.interp(lo, n, y)], y[inside], [np.interp(hi, n, y)]])
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (hi - lo)


def labels_to_reach(
    n: Sequence[float] | np.ndarray, dice: Sequence[float] | np.ndarray, target: float
) -> float:
    """Smallest n_labelled whose Dice >= target (no interpolation); nan if never reached."""
    n = np.asarray(n, dtype=float)
    y = np.asarray(dice, dtype=float)
    if not math.isfinite(target):
        return float("nan")
    hit = n[y >= target]
    return float(hit.min()) if hit.size else float("nan")


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (controls FWER); nan inputs stay nan and don't count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean over seeds; (nan, nan) if fewer than 2."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean() - half), float(v.mean() + half)


def bootstrap_ratio_ci(
    numer: Sequence[float] | np.ndarray,
    denom: Sequence[float] | np.ndarray,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Paired percentile bootstrap CI of mean(numer)/mean(denom), resampling seeds.

    Seeds are resampled jointly because both strategies share a seed's split and initial set.
    """
    a = np.asarray(numer, dtype=float)
    b = np.asarray(denom, dtype=float)
    if a.shape != b.shape or a.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_resamples, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.percentile(ratios, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p of a vs b; (nan, reason) when the test is undefined."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.size < 2:
        return float("nan"), f"Wilcoxon not computed: only {a.size} paired seed(s)"
    if np.all(a - b == 0):
        return float("nan"), "Wilcoxon not computed: all paired differences are zero"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(stats.wilcoxon(a, b, alternative="two-sided").pvalue)
    except ValueError as exc:
        return float("nan"), f"Wilcoxon not computed: {exc}"
    note = ""
    if a.size < 6:
        note = f"only {a.size} paired seeds: smallest attainable p is {2 / 2**a.size:.3g}"
    return p, note


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
def _exhausted_pool(run: Mapping) -> bool:
    """True if the run's last round trained on the whole training pool (initial + pool)."""
    rounds = [r for r in run.get("rounds", []) if r.get("n_labelled") is not None]
    splits = run.get("splits") or {}
    if not rounds or "initial" not in splits or "pool" not in splits:
        return False
    last = max(rounds, key=lambda r: (r.get("round", 0), r["n_labelled"]))
    total = len(splits["initial"]) + len(splits["pool"])
    dice = (last.get("test") or {}).get("dice")
    return not last.get("selected") and last["n_labelled"] == total and dice is not None


def _final_dice(run: Mapping) -> tuple[float, float]:
    """(largest n_labelled, Dice there) of a run's curve."""
    n, y = learning_curve(run)
    if n.size == 0:
        return float("nan"), float("nan")
    return float(n[-1]), float(y[-1])


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _baseline_name(strategies: Mapping[str, Mapping[Any, dict]]) -> str | None:
    """The random baseline: the group named 'random', else one whose runs use strategy random."""
    if BASELINE in strategies:
        return BASELINE
    for name in sorted(strategies):
        if all(r.get("strategy") == BASELINE for r in strategies[name].values()):
            return name
    return None


def _group(runs: list[dict]) -> tuple[dict[str, dict[str, dict[int, dict]]], list[str]]:
    """dataset -> strategy -> seed -> run; duplicates keep the finished / later-loaded run."""
    groups: dict[str, dict[str, dict[Any, dict]]] = {}
    notes = []
    for run in runs:
        ds, st, seed = str(run["dataset"]), strategy_name(run), run["seed"]
        per_seed = groups.setdefault(ds, {}).setdefault(st, {})
        if seed in per_seed:
            old = per_seed[seed]
            keep = run if run.get("_finished", True) or not old.get("_finished", True) else old
            dropped = old if keep is run else run
            notes.append(
                f"{ds}/{st} seed {seed}: duplicate runs, kept {keep.get('_path', '?')}, "
                f"ignored {dropped.get('_path', '?')}"
            )
            per_seed[seed] = keep
        else:
            per_seed[seed] = run
    return groups, notes


def _full_data_dice(
    strategies: dict[str, dict[Any, dict]], baseline: str | None
) -> tuple[dict[Any, float], dict[Any, str], str | None]:
    """Per-seed full-data Dice, how it was obtained, and the fallback footnote (if any)."""
    seeds = sorted({s for per in strategies.values() for s in per}, key=_seed_key)
    full: dict[Any, float] = {}
    source: dict[Any, str] = {}
    fallback: dict[Any, float] = {}
    for seed in seeds:
        exhausted = [per[seed] for per in strategies.values() if seed in per]
        exhausted = [r for r in exhausted if _exhausted_pool(r)]
        if exhausted:
            # Every run that labelled the whole pool trains on the same data: average them.
            full[seed] = float(np.mean([_final_dice(r)[1] for r in exhausted]))
            source[seed] = "full_pool"
        elif (
            baseline is not None
            and seed in strategies[baseline]
            and math.isfinite(_final_dice(strategies[baseline][seed])[1])
        ):
            n_last, d_last = _final_dice(strategies[baseline][seed])
            full[seed], source[seed] = d_last, "random_fallback"
            fallback[seed] = n_last
        else:
            full[seed], source[seed] = float("nan"), "unavailable"
    note = None
    if fallback:
        ns = ", ".join(_fmt_int(n) for n in sorted(set(fallback.values())))
        seeds_txt = ", ".join(str(s) for s in fallback)
        note = (
            f"full-data Dice unavailable: random's Dice at n={ns} used "
            f"(seed(s) {seeds_txt}: no run labelled the whole pool)"
        )
    missing = [s for s in seeds if source[s] == "unavailable"]
    if missing:
        extra = (
            "full-data Dice unavailable and no random run to fall back on for seed(s) "
            + ", ".join(str(s) for s in missing)
            + ": labels-to-reach not computed there"
        )
        note = f"{note}; {extra}" if note else extra
    return full, source, note


def _seed_key(seed: Any) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _censored_labels(n: np.ndarray, dice: np.ndarray, target: float) -> tuple[float, bool]:
    """labels_to_reach, but never-reached counts as (largest budget + 1) and is flagged."""
    v = labels_to_reach(n, dice, target)
    if math.isnan(v) and math.isfinite(target) and n.size:
        return float(n.max() + 1), True
    return v, False


def summarize(runs: list[dict]) -> dict:
    """All report numbers, per dataset and strategy; JSON-serialisable (nan -> null)."""
    groups, notes = _group(runs)
    datasets: dict[str, Any] = {}
    for ds in sorted(groups):
        strategies = groups[ds]
        baseline = _baseline_name(strategies)
        ds_notes: list[str] = []
        if baseline is None:
            ds_notes.append("no random baseline: savings, ratios and p-values not computed")
        curves = {
            st: {seed: learning_curve(run) for seed, run in per.items()}
            for st, per in strategies.items()
        }
        nonempty = [c for per in curves.values() for c in per.values() if c[0].size]
        n_min = max((float(c[0][0]) for c in nonempty), default=float("nan"))
        n_max = min((float(c[0][-1]) for c in nonempty), default=float("nan"))
        if nonempty and n_min > n_max:
            ds_notes.append("curves share no common budget range: ALC not computed")
        budgets = sorted({float(x) for c in nonempty for x in c[0]})
        full, full_source, full_note = _full_data_dice(strategies, baseline)
        if full_note:
            ds_notes.append(full_note)
        srcs = set(full_source.values())
        ds_full_source = srcs.pop() if len(srcs) == 1 else "mixed"

        st_out: dict[str, Any] = {}
        for st in _strategy_order(strategies, baseline):
            per = strategies[st]
            seeds = sorted(per, key=_seed_key)
            alc, l95, l100, c95, c100 = {}, {}, {}, {}, {}
            for seed in seeds:
                n, y = curves[st][seed]
                ok = n.size and n_min <= n_max
                alc[seed] = area_under_curve(n, y, n_min, n_max) if ok else float("nan")
                target = full.get(seed, float("nan"))
                l95[seed], c95[seed] = _censored_labels(n, y, 0.95 * target)
                l100[seed], c100[seed] = _censored_labels(n, y, target)
            by_budget = {}
            for b in budgets:
                vals = [
                    float(curves[st][s][1][curves[st][s][0] == b][-1])
                    for s in seeds
                    if np.any(curves[st][s][0] == b)
                ]
                if vals:
                    m, sd = _mean_std(vals)
                    lo, hi = t_interval(vals)
                    by_budget[_fmt_int(b)] = {
                        "mean": m,
                        "std": sd,
                        "n": len(vals),
                        "ci_low": lo,
                        "ci_high": hi,
                    }
            st_out[st] = {
                "n_seeds": len(seeds),
                "seeds": seeds,
                "n_unfinished": sum(not per[s].get("_finished", True) for s in seeds),
                "paths": [per[s].get("_path") for s in seeds],
                "dice_by_budget": by_budget,
                "alc": _stat_block(alc),
                "labels_to_95": _stat_block(l95, c95),
                "labels_to_100": _stat_block(l100, c100),
                "acquire_seconds": _stat_block({s: acquire_seconds(per[s]) for s in seeds}),
            }
        _paired_stats(st_out, baseline, ds_notes)
        datasets[ds] = {
            "baseline": baseline,
            "alc_range": [n_min, n_max],
            "budgets": [_fmt_int(b) for b in budgets],
            "full_data": {
                "source": ds_full_source,
                "per_seed": {str(s): v for s, v in full.items()},
                "source_per_seed": {str(s): v for s, v in full_source.items()},
                "note": full_note,
            },
            "strategies": st_out,
            "notes": ds_notes,
        }
    n_unfinished = sum(not r.get("_finished", True) for r in runs)
    if n_unfinished:
        notes.append(f"{n_unfinished} unfinished run(s) included with the rounds they completed")
    return _jsonable({"n_runs": len(runs), "datasets": datasets, "notes": notes})


def _strategy_order(strategies: Mapping[str, Any], baseline: str | None) -> list[str]:
    rest = sorted(s for s in strategies if s != baseline)
    return ([baseline] if baseline else []) + rest


def _stat_block(per_seed: dict, censored: dict | None = None) -> dict:
    m, sd = _mean_std(per_seed.values())
    block = {"per_seed": {str(s): v for s, v in per_seed.items()}, "mean": m, "std": sd}
    if censored is not None:
        block["censored_seeds"] = [str(s) for s, c in censored.items() if c]
        block["n_censored"] = len(block["censored_seeds"])
    return block


def _paired_stats(st_out: dict[str, dict], baseline: str | None, ds_notes: list[str]) -> None:
    """Wilcoxon on ALC, Holm across non-random strategies, bootstrap CI of the labels ratio."""
    if baseline is None:
        return
    base = st_out[baseline]
    others = [st for st in st_out if st != baseline]
    pvals = []
    for st in others:
        cur = st_out[st]
        seeds = [s for s in cur["alc"]["per_seed"] if s in base["alc"]["per_seed"]]
        a = [cur["alc"]["per_seed"][s] for s in seeds]
        b = [base["alc"]["per_seed"][s] for s in seeds]
        ok = [i for i in range(len(seeds)) if math.isfinite(a[i]) and math.isfinite(b[i])]
        p, note = paired_wilcoxon([a[i] for i in ok], [b[i] for i in ok])
        pvals.append(p)
        l_seeds = [
            s
            for s in cur["labels_to_95"]["per_seed"]
            if s in base["labels_to_95"]["per_seed"]
            and math.isfinite(cur["labels_to_95"]["per_seed"][s])
            and math.isfinite(base["labels_to_95"]["per_seed"][s])
        ]
        ls = np.array([cur["labels_to_95"]["per_seed"][s] for s in l_seeds])
        lr = np.array([base["labels_to_95"]["per_seed"][s] for s in l_seeds])
        ratio = float(ls.mean() / lr.mean()) if l_seeds and lr.mean() > 0 else float("nan")
        lo, hi = bootstrap_ratio_ci(ls, lr)
        censored = sorted(
            (
                set(cur["labels_to_95"]["censored_seeds"])
                | set(base["labels_to_95"]["censored_seeds"])
            )
            & set(l_seeds),
            key=_rkey,
        )
        notes = [note] if note else []
        if len(l_seeds) < 2:
            notes.append(f"ratio CI not computed: {len(l_seeds)} paired seed(s)")
        if censored:
            notes.append(
                "censored labels-to-95% (never reached, counted as largest budget + 1) "
                f"for seed(s) {', '.join(censored)}: ratio is a bound, not an estimate"
            )
        cur["stats"] = {
            "n_paired": len(ok),
            "n_paired_labels": len(l_seeds),
            "wilcoxon_p": p,
            "p_holm": float("nan"),
            "ratio": ratio,
            "saving_95": 1.0 - ratio if math.isfinite(ratio) else float("nan"),
            "ratio_ci": [lo, hi],
            "note": "; ".join(notes),
        }
        cur["saving_95"] = cur["stats"]["saving_95"]
    for st, padj in zip(others, holm(pvals), strict=True):
        st_out[st]["stats"]["p_holm"] = float(padj)
    base["saving_95"] = 0.0
    if others:
        ds_notes.append(
            f"p-values: two-sided Wilcoxon signed-rank on per-seed ALC vs {baseline}, "
            f"Holm-corrected across {len(others)} strateg{'y' if len(others) == 1 else 'ies'}"
        )


def _jsonable(obj: Any) -> Any:
    """Replace nan/inf by None and numpy scalars by Python ones so json.dumps is strict-valid."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------
def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _fmt_int(x: Any) -> str:
    x = _num(x)
    if not math.isfinite(x):
        return ""
    return str(int(x)) if x == int(x) else f"{x:g}"


def _fmt(x: Any, digits: int = 3) -> str:
    x = _num(x)
    return f"{x:.{digits}f}" if math.isfinite(x) else "—"


def _fmt_pm(mean: Any, std: Any, digits: int = 3) -> str:
    if not math.isfinite(_num(mean)):
        return "—"
    if not math.isfinite(_num(std)):
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} ± {_fmt(std, digits)}"


def _fmt_p(p: Any) -> str:
    p = _num(p)
    if not math.isfinite(p):
        return "—"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _csv_num(x: Any) -> str:
    x = _num(x) if not isinstance(x, str) else x
    if isinstance(x, str):
        return x
    return repr(float(x)) if math.isfinite(x) else ""


def _table_rows(summary: dict) -> list[dict[str, Any]]:
    """Human-readable rows for table.md / table.csv / HTML: one per dataset and strategy."""
    rows = []
    for ds, d in summary["datasets"].items():
        for st, s in d["strategies"].items():
            st_stats = s.get("stats", {})
            l95, l100 = s["labels_to_95"], s["labels_to_100"]
            row = {
                "dataset": ds,
                "strategy": st,
                "n_seeds": s["n_seeds"],
                "dice": {},
                "alc": _fmt_pm(s["alc"]["mean"], s["alc"]["std"]),
                "l95": _fmt_labels(l95, s["n_seeds"]),
                "l100": _fmt_labels(l100, s["n_seeds"]),
                "saving": _fmt_saving(s.get("saving_95"), st == d["baseline"]),
                "acquire": _fmt(s["acquire_seconds"]["mean"], 1),
                "raw": s,
                "stats": st_stats,
            }
            for b in d["budgets"]:
                cell = s["dice_by_budget"].get(b)
                if cell is None:
                    row["dice"][b] = "—"
                else:
                    txt = _fmt_pm(cell["mean"], cell["std"])
                    if cell["n"] != s["n_seeds"]:
                        txt += f" (n={cell['n']})"
                    row["dice"][b] = txt
            rows.append(row)
    return rows


def _fmt_labels(block: dict, n_seeds: int) -> str:
    txt = _fmt_pm(block["mean"], block["std"], 1)
    if block.get("n_censored"):
        txt = f"≥{txt} ({block['n_censored']}/{n_seeds} censored)"
    return txt


def _fmt_saving(x: Any, is_baseline: bool) -> str:
    if is_baseline:
        return "(baseline)"
    x = _num(x)
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "—"


def _markdown(summary: dict) -> str:
    lines = ["# Active-learning comparison", ""]
    rows = _table_rows(summary)
    for ds, d in summary["datasets"].items():
        budgets = d["budgets"]
        lo, hi = (_fmt_int(v) for v in d["alc_range"])
        head = (
            ["strategy", "n_seeds"]
            + [f"Dice n={b}" for b in budgets]
            + [f"ALC [{lo}, {hi}]", "labels to 95%", "labels to 100%", "saving vs random @95%"]
            + ["acquire s/round"]
        )
        lines += [
            f"## {ds}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---" for _ in head) + "|",
        ]
        for r in (r for r in rows if r["dataset"] == ds):
            cells = [r["strategy"], str(r["n_seeds"])] + [r["dice"][b] for b in budgets]
            cells += [r["alc"], r["l95"], r["l100"], r["saving"], r["acquire"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        stats_rows = [r for r in rows if r["dataset"] == ds and r["stats"]]
        if stats_rows:
            lines += [
                "",
                f"Paired statistics vs {d['baseline']} (by seed):",
                "",
                (
                    "| strategy | n paired | Wilcoxon p | Holm p | labels ratio @95% | 95% CI "
                    "| note |"
                ),
                "|---|---|---|---|---|---|---|",
            ]
            for r in stats_rows:
                s = r["stats"]
                ci = f"[{_fmt(s['ratio_ci'][0])}, {_fmt(s['ratio_ci'][1])}]"
                lines.append(
                    f"| {r['strategy']} | {s['n_paired']} | {_fmt_p(s['wilcoxon_p'])} | "
                    f"{_fmt_p(s['p_holm'])} | {_fmt(s['ratio'])} | {ci} | {s['note']} |"
                )
        lines.append("")
        lines += [f"- Note: {note}" for note in d["notes"]]
        lines.append("")
    for note in summary["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def _table_csv(summary: dict) -> str:
    budgets = sorted({b for d in summary["datasets"].values() for b in d["budgets"]}, key=float)
    header = ["dataset", "strategy", "n_seeds"]
    for b in budgets:
        header += [f"dice_n{b}_mean", f"dice_n{b}_std", f"dice_n{b}_n"]
    header += [
        "alc_mean",
        "alc_std",
        "labels_to_95_mean",
        "labels_to_95_std",
        "labels_to_95_censored",
        "labels_to_100_mean",
        "labels_to_100_std",
        "labels_to_100_censored",
        "saving_95_vs_random",
        "full_data_note",
        "acquire_seconds_mean",
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for ds, d in summary["datasets"].items():
        for st, s in d["strategies"].items():
            row: list[Any] = [ds, st, s["n_seeds"]]
            for b in budgets:
                c = s["dice_by_budget"].get(b)
                row += [_csv_num(c["mean"]), _csv_num(c["std"]), c["n"]] if c else ["", "", ""]
            row += [
                _csv_num(s["alc"]["mean"]),
                _csv_num(s["alc"]["std"]),
                _csv_num(s["labels_to_95"]["mean"]),
                _csv_num(s["labels_to_95"]["std"]),
                s["labels_to_95"]["n_censored"],
                _csv_num(s["labels_to_100"]["mean"]),
                _csv_num(s["labels_to_100"]["std"]),
                s["labels_to_100"]["n_censored"],
                "" if st == d["baseline"] else _csv_num(s.get("saving_95")),
                d["full_data"]["note"] or "",
                _csv_num(s["acquire_seconds"]["mean"]),
            ]
            w.writerow(row)
    return buf.getvalue()


def _summary_csv(summary: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS + SUMMARY_EXTRA_COLUMNS)
    for ds, d in summary["datasets"].items():
        for st, s in d["strategies"].items():
            is_base = st == d["baseline"]
            stt = s.get("stats") or {}
            ci = stt.get("ratio_ci", [None, None])
            w.writerow(
                [
                    ds,
                    st,
                    s["n_seeds"],
                    _csv_num(s["alc"]["mean"]),
                    _csv_num(s["alc"]["std"]),
                    _csv_num(s["labels_to_95"]["mean"]),
                    "" if is_base else _csv_num(ci[0]),
                    "" if is_base else _csv_num(ci[1]),
                    "" if is_base else _csv_num(stt.get("p_holm")),
                    s["n_unfinished"],
                    _csv_num(d["alc_range"][0]),
                    _csv_num(d["alc_range"][1]),
                    _csv_num(s["labels_to_95"]["std"]),
                    s["labels_to_95"]["n_censored"],
                    _csv_num(s["labels_to_100"]["mean"]),
                    s["labels_to_100"]["n_censored"],
                    "" if is_base else _csv_num(s.get("saving_95")),
                    "" if is_base else _csv_num(stt.get("ratio")),
                    "" if is_base else stt.get("n_paired", ""),
                    "" if is_base else _csv_num(stt.get("wilcoxon_p")),
                    "" if is_base else stt.get("note", ""),
                    d["full_data"]["source"],
                    _csv_num(s["acquire_seconds"]["mean"]),
                ]
            )
    return buf.getvalue()


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


def _rkey(k: Any) -> tuple:
    try:
        return (0, float(k), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(k))


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


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
.note{color:#7a4b00;font-size:.9em} .small{color:#666;font-size:.85em}
img{max-width:100%} .maps img{width:160px;margin:2px;border:1px solid #ddd}
"""


def _b64_img(data: bytes, alt: str, mime: str = "image/png", css: str = "") -> str:
    src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    cls = f' class="{css}"' if css else ""
    return f'<img{cls} alt="{html.escape(alt)}" src="{src}">'


def _html_table(head: list[str], body: list[list[str]]) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in body]
    out.append("</table>")
    return "\n".join(out)


def _html(
    summary: dict, curves_png: bytes, maps: dict, maps_png: bytes | None, runs: list[dict]
) -> str:
    e = html.escape
    rows = _table_rows(summary)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>axal active-learning report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Active-learning comparison</h1>",
        (
            f'<p class="small">{summary["n_runs"]} run(s); generated '
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}. Seeds are paired: a seed "
            "gives every strategy the same split and initial labelled set.</p>"
        ),
    ]
    for note in summary["notes"]:
        parts.append(f'<p class="note">{e(note)}</p>')
    parts += [
        "<h2>Learning curves</h2>",
        (
            "<p>Test Dice against the number of labelled images; line = mean over seeds, "
            "band = 95% t-interval over seeds (absent with one seed). Seeds per strategy are "
            "in the legend.</p>"
        ),
        _b64_img(curves_png, "learning curves"),
    ]
    for ds, d in summary["datasets"].items():
        budgets = d["budgets"]
        lo, hi = (_fmt_int(v) for v in d["alc_range"])
        parts.append(f"<h2>Dataset {e(ds)}</h2>")
        head = (
            ["strategy", "n seeds"]
            + [f"Dice n={b}" for b in budgets]
            + [
                f"norm. ALC [{lo}, {hi}]",
                "labels to 95%",
                "labels to 100%",
                "saving vs random @95%",
                "acquire s/round",
            ]
        )
        body = [
            [
                r["strategy"],
                r["n_seeds"],
                *[r["dice"][b] for b in budgets],
                r["alc"],
                r["l95"],
                r["l100"],
                r["saving"],
                r["acquire"],
            ]
            for r in rows
            if r["dataset"] == ds
        ]
        parts.append(_html_table(head, body))
        stat_rows = [r for r in rows if r["dataset"] == ds and r["stats"]]
        if stat_rows:
            parts.append(f"<h3>Paired statistics vs {e(str(d['baseline']))} (by seed)</h3>")
            head = [
                "strategy",
                "n paired seeds",
                "Wilcoxon p (ALC)",
                "Holm p",
                "labels ratio @95%",
                "bootstrap 95% CI",
                "note",
            ]
            body = []
            for r in stat_rows:
                s = r["stats"]
                body.append(
                    [
                        r["strategy"],
                        s["n_paired"],
                        _fmt_p(s["wilcoxon_p"]),
                        _fmt_p(s["p_holm"]),
                        _fmt(s["ratio"]),
                        f"[{_fmt(s['ratio_ci'][0])}, {_fmt(s['ratio_ci'][1])}]",
                        s["note"] or "",
                    ]
                )
            parts.append(_html_table(head, body))
            parts.append(
                f'<p class="small">Ratio = mean labels-to-95% of the strategy / '
                f"mean of random over paired seeds; CI: percentile bootstrap over "
                f"seeds, {N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}.</p>"
            )
        for note in d["notes"]:
            parts.append(f'<p class="note">Note: {e(note)}</p>')
    parts.append("<h2>Uncertainty-map evolution</h2>")
    if not maps:
        parts.append('<p class="small">No run saved uncertainty maps; section skipped.</p>')
    else:
        if maps_png:
            parts.append(_b64_img(maps_png, "uncertainty maps across rounds"))
        for ds, sts in maps.items():
            for st, entry in sts.items():
                parts.append(f"<h3>{e(ds)} / {e(st)} (seed {e(str(entry['seed']))})</h3>")
                parts.append('<div class="maps">')
                for rnd, files in entry["rounds"]:
                    for f in files:
                        try:
                            data = f.read_bytes()
                        except OSError:
                            parts.append(f'<span class="note">missing: {e(str(f))}</span>')
                            continue
                        mime = "image/svg+xml" if f.suffix.lower() == ".svg" else "image/png"
                        parts.append(
                            f'<figure style="display:inline-block;margin:2px">'
                            f"{_b64_img(data, f'round {rnd}', mime)}"
                            f"<figcaption class=small>round {e(str(rnd))}</figcaption>"
                            "</figure>"
                        )
                parts.append("</div>")
    parts.append("<h2>Runs</h2>")
    body = [
        [
            r["dataset"],
            strategy_name(r),
            r["seed"],
            "yes" if r.get("_finished", True) else "NO",
            r.get("_path", ""),
        ]
        for r in sorted(
            runs, key=lambda r: (str(r["dataset"]), strategy_name(r), _seed_key(r["seed"]))
        )
    ]
    parts.append(_html_table(["dataset", "strategy", "seed", "finished", "results"], body))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_report(
    runs_or_dirs: Iterable[dict | str | Path] | str | Path, out_dir: str | Path
) -> dict:
    """Write figures, tables, stats, summary.{csv,json} and report.html; return the summary.

    ``runs_or_dirs`` is a list of loaded run dicts, or paths (results.json files or folders).
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

    summary = summarize(runs)
    fig = _learning_curve_figure(summary)
    curves_png = _fig_bytes(fig, "png")
    atomic_write(out / "learning_curves.png", curves_png)
    atomic_write(out / "learning_curves.svg", _fig_bytes(fig, "svg"))
    maps = _uncertainty_entries(runs)
    maps_fig = _uncertainty_figure(maps) if maps else None
    maps_png = _fig_bytes(maps_fig, "png") if maps_fig is not None else None
    if maps_png:
        atomic_write(out / "uncertainty_maps.png", maps_png)

    atomic_write(out / "table.md", _markdown(summary))
    atomic_write(out / "table.csv", _table_csv(summary))
    atomic_write(out / "summary.csv", _summary_csv(summary))
    atomic_write(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write(out / "report.html", _html(summary, curves_png, maps, maps_png, runs))
    return summary
