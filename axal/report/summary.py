"""Loading results.json files and reducing them to the report's numbers (``summarize``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axal.report.statistics import (
    _mean_std,
    acquire_seconds,
    area_under_curve,
    bootstrap_ratio_ci,
    holm,
    labels_to_reach,
    learning_curve,
    paired_wilcoxon,
    t_interval,
)
from axal.report.tables import _fmt_int

RESULTS_NAME = "results.json"
BASELINE = "random"
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
REQUIRED_KEYS = ("dataset", "strategy", "seed", "rounds")


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


def _rkey(k: Any) -> tuple:
    try:
        return (0, float(k), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(k))


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
