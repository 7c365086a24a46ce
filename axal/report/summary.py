"""Loading results.json files and reducing them to the report's numbers (``summarize``).

Runs are grouped by (dataset, annotation unit): an image study and a tile study answer
different questions and never share a table. Image studies keep labelled images on the budget
axis; tile studies use the labelled-pixel fraction of the training pool. Full-data reference
runs (strategy ``full``) set the 95% / 100% targets and are never a strategy in paired tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axal.domain import semi_suffix
from axal.report.ordering import natural_key
from axal.report.provenance import machine_notes, machines, round_0_apart, round_0_notes
from axal.report.statistics import (
    AIM_EFFORT_RATIO,
    BOOTSTRAP_MIN_SEEDS,
    FRACTION,
    N_LABELLED,
    _mean_std,
    acquire_seconds,
    area_under_curve,
    bootstrap_ratio_ci,
    budget_steps,
    collapsed_rounds,
    effort_to_aim,
    first_to_reach,
    holm,
    interpolate_at,
    labels_to_reach,
    labels_to_reach_interpolated,
    learning_curve,
    mde_paired,
    mixed_model_difference,
    paired_wilcoxon,
    round_fraction,
    run_restarts,
    run_unit,
    seeds_for_difference,
    t_interval,
)
from axal.report.tables import _fmt_budget
from axal.results import RESULTS, is_full_run

BASELINE = "random"
FULL_ROW = "full data"  # its row in tables and its column in the per-subject table
REQUIRED_KEYS = ("dataset", "strategy", "seed", "rounds")
# Dice-vs-budget columns of a tile study: linear interpolation of each seed's curve at these
# labelled-pixel fractions (those inside the runs' range), so seeds whose rounds land on
# different fractions are compared at the same budget.
TILE_BUDGETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CURVE_POINTS = 41  # points of a tile study's plotted mean curve across the common range
CLASS_METRICS = ("dice_myelin", "dice_axon")
# what a lab measures (task=axonmyelin, axal.morphometrics): end-of-budget values per seed
LAB_METRICS = ("fiber_f1", "gratio_error", "axon_diam_error", "density_error")
# annotator-time settings the ranking by correction seconds is recomputed under (al.cost keys)
ONE_POINT = 0.01  # a 1-point gain of ALC (Dice in [0, 1]): the seed count the report gives
COST_SETTINGS = {
    "default": {},
    "drawing dear": {"draw": 60.0, "fix": 25.0},
    "checking dear": {"check": 5.0, "delete": 5.0, "overhead": 10.0},
}


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
            files.extend(sorted(p.rglob(RESULTS)))
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
    """Display name: the variant ``label`` (e.g. 'bald+power') if present, else ``strategy``;
    a semi-supervised run (``trainer.semi``) is its own arm: 'random+mean_teacher'."""
    name = str(run.get("label") or run["strategy"])
    semi = ((run.get("config") or {}).get("trainer") or {}).get("semi")
    suffix = semi_suffix(dict(semi) if isinstance(semi, Mapping) else semi)
    return name if suffix[1:] in name else name + suffix


def _draw_name(run: Mapping) -> str:
    """One draw's name in a note: its arm, and its replicate when it is one."""
    rep = run_replicate(run)
    return strategy_name(run) + (f" (replicate {rep})" if rep else "")


def run_replicate(run: Mapping) -> int:
    """The run's ``al.replicate`` (another draw of its seed); 0 for runs recorded before."""
    value = run.get("replicate")
    if value is None:
        value = ((run.get("config") or {}).get("al") or {}).get("replicate")
    return int(value or 0)


def draws(run: Mapping) -> list[Mapping]:
    """A seed's runs of one strategy: the run and its replicates (:func:`_group` files them
    under ``_replicates``), which a seed's numbers average before any pairing by seed."""
    return [run, *run.get("_replicates", [])]


def _mean(values: Iterable[float]) -> float:
    """Mean of the finite values (the value itself when there is one); nan if none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan")
    return v[0] if len(v) == 1 else float(np.mean(v))


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------
def group_key(dataset: str, unit: str) -> str:
    """Name of a (dataset, unit) group: the dataset alone for images (as before units existed)."""
    return str(dataset) if unit == "image" else f"{dataset}/{unit}"


def _group(runs: list[dict]) -> tuple[dict[str, dict[str, dict[Any, dict]]], list[str]]:
    """group -> strategy -> seed -> run; duplicates keep the finished / later-loaded run.

    Replicates of a seed (``al.replicate``) are not duplicates: the lowest one is the seed's
    run and the others are filed in its ``_replicates`` (:func:`draws`)."""
    by_draw: dict[str, dict[str, dict[Any, dict[int, dict]]]] = {}
    notes = []
    for run in runs:
        ds = group_key(str(run["dataset"]), run_unit(run))
        st, seed = strategy_name(run), run["seed"]
        per_draw = by_draw.setdefault(ds, {}).setdefault(st, {}).setdefault(seed, {})
        rep = run_replicate(run)
        if rep in per_draw:
            old = per_draw[rep]
            keep = run if run.get("_finished", True) or not old.get("_finished", True) else old
            dropped = old if keep is run else run
            what = f"seed {seed}" + (f" replicate {rep}" if rep else "")
            notes.append(
                f"{ds}/{st} {what}: duplicate runs, kept {keep.get('_path', '?')}, "
                f"ignored {dropped.get('_path', '?')}"
            )
            per_draw[rep] = keep
        else:
            per_draw[rep] = run
    groups: dict[str, dict[str, dict[Any, dict]]] = {}
    for ds, per_st in by_draw.items():
        for st, per_seed in per_st.items():
            for seed, per_draw in per_seed.items():
                ordered = [per_draw[k] for k in sorted(per_draw)]
                first = ordered[0]
                first.pop("_replicates", None)
                if len(ordered) > 1:
                    first["_replicates"] = ordered[1:]
                groups.setdefault(ds, {}).setdefault(st, {})[seed] = first
    return groups, notes


def complete_seeds(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """The finished runs of the seeds on which every arm, and every replicate of it, finished.

    A study still in progress has its arms finished on different seeds: their means would then
    cover different test subjects. An arm is a (unit, strategy, replicate) seen anywhere in
    ``runs`` for the dataset, finished or not. The full-data reference runs are not arms: those
    of a kept seed are kept, whatever replicates they have. Returns the kept runs, in their
    order, and one note per dataset that lost seeds.
    """
    arms: dict[str, set] = {}
    done: dict[str, dict[Any, set]] = {}
    for run in runs:
        ds = str(run["dataset"])
        arms.setdefault(ds, set())
        done.setdefault(ds, {}).setdefault(run["seed"], set())
        if is_full_run(run):
            continue
        arm = (run_unit(run), strategy_name(run), run_replicate(run))
        arms[ds].add(arm)
        if run.get("_finished"):
            done[ds][run["seed"]].add(arm)
    keep = {ds: {s for s, have in per.items() if have >= arms[ds]} for ds, per in done.items()}
    notes = []
    for ds, per in done.items():
        left = sorted(set(per) - keep[ds], key=natural_key)
        if left:
            notes.append(
                f"{ds}: seed(s) {', '.join(str(s) for s in left)} left out: not every arm "
                f"has finished on them (kept {len(keep[ds])} seed(s))"
            )
    kept = [r for r in runs if r.get("_finished") and r["seed"] in keep[str(r["dataset"])]]
    return kept, notes


def _split_full(
    groups: dict[str, dict[str, dict[Any, dict]]],
) -> tuple[dict[str, dict[str, dict[Any, dict]]], dict[str, dict[Any, dict]], list[str]]:
    """Take the full-data runs out of the strategies; borrow them across units if need be.

    A group without its own full runs uses those of another unit of the same dataset (same
    recipe, same split per seed); a group holding only full runs that another group borrowed
    is dropped, so the reference is not reported twice.
    """
    strategies: dict[str, dict[str, dict[Any, dict]]] = {}
    own_full: dict[str, dict[Any, dict]] = {}
    for key, per_name in groups.items():
        strategies[key] = {}
        for name, per_seed in per_name.items():
            if all(is_full_run(r) for r in per_seed.values()):
                own_full.setdefault(key, {}).update(per_seed)
            else:
                strategies[key][name] = per_seed
    dataset_of = {
        key: str(next(iter(next(iter(g.values())).values()))["dataset"])
        for key, g in groups.items()
    }
    full: dict[str, dict[Any, dict]] = {}
    notes: list[str] = []
    borrowed: set[str] = set()
    for key in groups:
        if key in own_full:
            full[key] = own_full[key]
            continue
        donors = [k for k in own_full if dataset_of[k] == dataset_of[key] and k != key]
        if donors and strategies[key]:
            full[key] = own_full[donors[0]]
            borrowed.add(donors[0])
            notes.append(
                f"{key}: full-data reference taken from the {donors[0]} runs (no full-data "
                "run of this unit)"
            )
    for key in borrowed:
        if not strategies[key]:  # only the reference, already shown where it was borrowed
            del strategies[key]
            del full[key]
    return strategies, full, notes


def _baseline_name(strategies: Mapping[str, Mapping[Any, dict]]) -> str | None:
    """The random baseline: the group named 'random', else one whose runs use strategy random."""
    if BASELINE in strategies:
        return BASELINE
    for name in sorted(strategies):
        if all(r.get("strategy") == BASELINE for r in strategies[name].values()):
            return name
    return None


# --------------------------------------------------------------------------------------------
# Full-data Dice: the reference runs, else the old fallback
# --------------------------------------------------------------------------------------------
def _last_round(run: Mapping) -> Mapping | None:
    """The run's last round that has a test Dice."""
    rounds = [r for r in run.get("rounds", []) if (r.get("test") or {}).get("dice") is not None]
    return max(rounds, key=lambda r: (r.get("round", 0), r.get("n_labelled") or 0), default=None)


def _exhausted_pool(run: Mapping) -> bool:
    """True if the run's last round trained on the whole training pool (initial + pool)."""
    rounds = [r for r in run.get("rounds", []) if r.get("n_labelled") is not None]
    splits = run.get("splits") or {}
    if not rounds:
        return False
    last = max(rounds, key=lambda r: (r.get("round", 0), r["n_labelled"]))
    dice = (last.get("test") or {}).get("dice")
    fraction = round_fraction(last, run)
    if math.isfinite(fraction):  # pixel budgets recorded: the whole pool is fraction 1
        return not last.get("selected") and fraction >= 1 - 1e-9 and dice is not None
    if "initial" not in splits or "pool" not in splits:
        return False
    total = len(splits["initial"]) + len(splits["pool"])
    return not last.get("selected") and last["n_labelled"] == total and dice is not None


def _final_dice(run: Mapping, budget: str = N_LABELLED) -> tuple[float, float]:
    """(largest budget, Dice there) of a run's curve."""
    n, y = learning_curve(run, budget=budget)
    if n.size == 0:
        return float("nan"), float("nan")
    return float(n[-1]), float(y[-1])


def _full_reference(
    full_runs: dict[Any, dict], seeds: list
) -> tuple[dict[Any, float], dict[Any, str], str | None, dict]:
    """Per-seed full-data Dice from the reference runs, paired by seed.

    A seed without its own reference run gets the mean over the reference seeds (noted),
    so its labels-to-95% is still defined but no longer strictly paired.
    """
    dice = {}
    for seed, run in full_runs.items():
        lasts = [last for r in draws(run) if (last := _last_round(r)) is not None]
        if lasts:  # replicates (another training seed) averaged within the seed
            dice[seed] = _mean(float(last["test"]["dice"]) for last in lasts)
    values = list(dice.values())
    mean = float(np.mean(values)) if values else float("nan")
    full, source = {}, {}
    lacking = []
    for seed in seeds:
        if seed in dice:
            full[seed], source[seed] = dice[seed], "full_run"
        elif values:
            full[seed], source[seed] = mean, "full_run_mean"
            lacking.append(seed)
        else:
            full[seed], source[seed] = float("nan"), "unavailable"
    note = None
    if lacking:
        over = ", ".join(str(s) for s in sorted(dice, key=natural_key))
        note = (
            f"no full-data run for seed(s) {', '.join(str(s) for s in lacking)}: the mean "
            f"full-data Dice over seed(s) {over}"
            " used there (not paired)"
        )
    if not values:
        note = "full-data runs recorded no test Dice: labels-to-reach not computed"
    m, sd = _mean_std(values)
    lo, hi = t_interval(values)
    reference = {
        "n_seeds": len(values),
        "seeds": sorted(dice, key=natural_key),
        "per_seed": {str(s): v for s, v in dice.items()},
        "mean": m,
        "std": sd,
        "ci_low": lo,
        "ci_high": hi,
        "restarts": sum(run_restarts(d)[0] for r in full_runs.values() for d in draws(r)),
        "paths": [
            d.get("_path") for s in sorted(full_runs, key=natural_key) for d in draws(full_runs[s])
        ],
    }
    n_draws = sum(len(draws(r)) for r in full_runs.values())
    if n_draws > len(full_runs):
        reference["n_draws"] = n_draws
    return full, source, note, reference


def _full_data_fallback(
    strategies: dict[str, dict[Any, dict]], baseline: str | None, budget: str = N_LABELLED
) -> tuple[dict[Any, float], dict[Any, str], str | None]:
    """Without reference runs: a run that labelled the whole pool, else random's last Dice."""
    seeds = sorted({s for per in strategies.values() for s in per}, key=natural_key)
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
            and math.isfinite(_final_dice(strategies[baseline][seed], budget)[1])
        ):
            n_last, d_last = _final_dice(strategies[baseline][seed], budget)
            full[seed], source[seed] = d_last, "random_fallback"
            fallback[seed] = n_last
        else:
            full[seed], source[seed] = float("nan"), "unavailable"
    note = None
    if fallback:
        ns = ", ".join(_fmt_budget(n, budget) for n in sorted(set(fallback.values())))
        at = f"n={ns}" if budget == N_LABELLED else f"{ns} of pool pixels"
        seeds_txt = ", ".join(str(s) for s in fallback)
        note = (
            f"full-data Dice unavailable: random's Dice at {at} used "
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


def _censored_labels(
    n: np.ndarray,
    dice: np.ndarray,
    target: float,
    budget: str = N_LABELLED,
    interpolate: bool = False,
) -> tuple[float, bool]:
    """labels_to_reach (``interpolate``: between rounds), but never-reached counts as a bound
    and is flagged.

    The bound is a lower one, just past what the run labelled: its largest budget + 1 for
    units, its largest pixel fraction for pixels. (The whole pool, fraction 1, was the bound
    once: in a tile study that stops at 13% of the pixels it made a censored seed 8x dearer
    than anything measured, and a ratio to it a saving nobody saw.)
    """
    reach = labels_to_reach_interpolated if interpolate else labels_to_reach
    v = reach(n, dice, target)
    if math.isnan(v) and math.isfinite(target) and n.size:
        return (float(n.max()) if budget == FRACTION else float(n.max() + 1)), True
    return v, False


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
def _budget_points(
    curves: list[tuple[np.ndarray, np.ndarray]], budget: str, lo: float, hi: float
) -> list[float]:
    """Table columns: every budget reached (units), or fixed pixel fractions (tiles)."""
    if budget == N_LABELLED:
        return sorted({float(x) for c in curves for x in c[0]})
    if not curves:
        return []
    first = min(float(c[0][0]) for c in curves)
    last = max(float(c[0][-1]) for c in curves)
    points = [b for b in TILE_BUDGETS if first - 1e-12 <= b <= last + 1e-12]
    if len(points) < 2 and math.isfinite(lo) and math.isfinite(hi):
        points = sorted({*points, lo, hi})
    return points


def _cell(values: list[float]) -> dict:
    m, sd = _mean_std(values)
    lo, hi = t_interval(values)
    return {"mean": m, "std": sd, "n": len(values), "ci_low": lo, "ci_high": hi}


def _values_at(
    curves: dict[Any, list[tuple[np.ndarray, np.ndarray]]],
    seeds: list,
    points: list[float],
    exact: bool,
) -> list[list[float]]:
    """Per point, the seeds' Dice there: exact budgets (units) or interpolated (fractions);
    a seed's draws (its replicates' curves) are averaged first."""
    out: list[list[float]] = [[] for _ in points]
    for s in seeds:
        per_point: list[list[float]] = [[] for _ in points]
        for x, y in curves[s]:
            if not x.size:
                continue
            if exact:
                for i, b in enumerate(points):
                    hit = y[x == b]
                    if hit.size:
                        per_point[i].append(float(hit[-1]))
            else:
                for i, v in enumerate(interpolate_at(x, y, points)):
                    if math.isfinite(v):
                        per_point[i].append(float(v))
        for i, vals in enumerate(per_point):
            if vals:
                out[i].append(_mean(vals))
    return out


def _subject_alc(runs: list[Mapping], budget: str, lo: float, hi: float) -> dict[str, float]:
    """Per test subject, the normalised ALC of its own Dice curve over [lo, hi], averaged over
    the seed's draws (its replicates): the observations of the mixed model per subject."""
    values: dict[str, list[float]] = {}
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        return {}
    for run in runs:
        pts: dict[str, list[tuple[float, float]]] = {}
        for r in run.get("rounds", []):
            x = r.get("n_labelled") if budget == N_LABELLED else round_fraction(r, run)
            per = (r.get("test") or {}).get("per_subject") or {}
            if x is None or not math.isfinite(float(x)):
                continue
            for subject, vals in per.items():
                v = (vals or {}).get("dice")
                if v is not None and math.isfinite(float(v)):
                    pts.setdefault(str(subject), []).append((float(x), float(v)))
        for subject, xy in pts.items():
            x = np.array([p[0] for p in xy])
            if x.size and x.min() <= lo and x.max() >= hi:
                a = area_under_curve(x, np.array([p[1] for p in xy]), lo, hi)
                values.setdefault(subject, []).append(a)
    return {subject: _mean(v) for subject, v in sorted(values.items())}


def _subject_dice(run: Mapping, upto: float, budget: str) -> dict[str, dict[str, float]]:
    """Per-subject test metrics of a run's last round within the budget range (<= upto)."""
    rounds = []
    for r in run.get("rounds", []):
        per = (r.get("test") or {}).get("per_subject")
        x = r.get("n_labelled") if budget == N_LABELLED else round_fraction(r, run)
        if per and x is not None and math.isfinite(float(x)):
            rounds.append((float(x), r.get("round", 0), per))
    if not rounds:
        return {}
    inside = [t for t in rounds if not math.isfinite(upto) or t[0] <= upto + 1e-9]
    _, _, per = max(inside or rounds, key=lambda t: (t[0], t[1]))
    return per


def _per_subject(
    strategies: dict[str, dict[Any, dict]],
    order: list[str],
    full_runs: dict[Any, dict],
    upto: float,
    budget: str,
    metrics: tuple[str, ...],
) -> dict[str, dict[str, dict[str, dict]]]:
    """metric -> subject -> strategy (and 'full data') -> mean/std/n over the seeds tested."""
    columns = [(st, strategies[st]) for st in order]
    if full_runs:
        columns.append((FULL_ROW, full_runs))
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for metric in metrics:
        table: dict[str, dict[str, list[float]]] = {}
        for name, per in columns:
            for run in per.values():
                cut = float("inf") if name == FULL_ROW else upto
                by_subject: dict[str, list[float]] = {}  # a seed's replicates, averaged
                for one in draws(run):
                    for subject, vals in _subject_dice(one, cut, budget).items():
                        v = (vals or {}).get(metric)
                        if v is not None and math.isfinite(float(v)):
                            by_subject.setdefault(str(subject), []).append(float(v))
                for subject, values in by_subject.items():
                    table.setdefault(subject, {}).setdefault(name, []).append(_mean(values))
        if any(name != FULL_ROW for cols in table.values() for name in cols):
            out[metric] = {
                subj: {name: _cell(v) for name, v in cols.items()}
                for subj, cols in sorted(table.items())
            }
    return out


def _group_notes(key: str, runs: list[dict]) -> list[str]:
    notes = []
    tasks = sorted({str(r.get("task", "?")) for r in runs})
    if len(tasks) > 1:
        notes.append(f"runs of several tasks mixed in one group: {', '.join(tasks)}")
    sizes = sorted({r.get("tile_size") for r in runs if r.get("tile_size")})
    if len(sizes) > 1:
        notes.append(
            f"tile sizes {', '.join(str(s) for s in sizes)} px mixed: compared on the "
            "labelled-pixel fraction"
        )
    return notes


def _study_strategies(
    strategies: dict[str, dict[Any, dict]],
) -> tuple[dict[str, dict[Any, dict]], list[str]]:
    """The strategies run on the study's seeds; one with fewer seeds than the most-run strategy
    is left out of every table and figure (its few bands would stretch the axes, and a saving
    that only 2 seeds stand behind says nothing), and a note names it and its seed count."""
    most = max((len(per) for per in strategies.values()), default=0)
    kept = {st: per for st, per in strategies.items() if len(per) == most}
    notes = [
        f"{st}: left out, {len(per)} of the study's {most} seeds so far"
        for st, per in sorted(strategies.items())
        if len(per) < most
    ]
    return kept, notes


def summarize(runs: list[dict], few_seeds: bool = False) -> dict:
    """All report numbers, per (dataset, unit) group and strategy; JSON-serialisable."""
    groups, notes = _group(runs)
    strategies_by_group, full_by_group, full_notes = _split_full(groups)
    notes += full_notes
    datasets: dict[str, Any] = {}
    for ds in sorted(strategies_by_group):
        strategies, few = strategies_by_group[ds], []
        if not few_seeds:
            strategies, few = _study_strategies(strategies)
        full_runs = full_by_group.get(ds, {})
        members = [d for per in groups[ds].values() for r in per.values() for d in draws(r)]
        unit = run_unit(members[0])
        budget = FRACTION if unit == "tile" else N_LABELLED
        baseline = _baseline_name(strategies)
        ds_notes: list[str] = _group_notes(ds, members)
        ds_notes += few
        ran_on, apart = machines(members), round_0_apart(members, _draw_name)
        ds_notes += machine_notes(ran_on) + round_0_notes(apart)
        if baseline is None and strategies:
            ds_notes.append("no random baseline: savings, ratios and p-values not computed")
        # per seed, one curve per draw (the seed's run and its replicates)
        curves = {
            st: {
                seed: [learning_curve(d, budget=budget) for d in draws(run)]
                for seed, run in per.items()
            }
            for st, per in strategies.items()
        }
        fraction_curves = {
            st: {
                seed: [learning_curve(d, budget=FRACTION) for d in draws(run)]
                for seed, run in per.items()
            }
            for st, per in strategies.items()
        }
        nonempty = [c for per in curves.values() for cs in per.values() for c in cs if c[0].size]
        if budget == FRACTION and strategies and not nonempty:
            ds_notes.append("tile runs recorded no labelled-pixel fraction: no curves")
        n_min = max((float(c[0][0]) for c in nonempty), default=float("nan"))
        n_max = min((float(c[0][-1]) for c in nonempty), default=float("nan"))
        if nonempty and n_min > n_max:
            ds_notes.append("curves share no common budget range: ALC not computed")
        points = _budget_points(nonempty, budget, n_min, n_max)
        if budget == FRACTION and nonempty and n_min < n_max:
            curve_x = list(np.linspace(n_min, n_max, CURVE_POINTS))
        else:
            curve_x = points
        seeds_all = sorted({s for per in strategies.values() for s in per}, key=natural_key)
        reference = None
        if full_runs:
            full, full_source, full_note, reference = _full_reference(full_runs, seeds_all)
            ds_full_source = "full_runs"
        else:
            full, full_source, full_note = _full_data_fallback(strategies, baseline, budget)
            srcs = set(full_source.values())
            ds_full_source = srcs.pop() if len(srcs) == 1 else ("mixed" if srcs else "none")
        if full_note:
            ds_notes.append(full_note)
        axonmyelin = any(
            (r.get("test") or {}).get("dice_axon") is not None
            for run in members
            for r in run.get("rounds", [])
        ) or any(str(r.get("task")) == "axonmyelin" for r in members)

        st_out: dict[str, Any] = {}
        order = _strategy_order(strategies, baseline)
        for st in order:
            per = strategies[st]
            seeds = sorted(per, key=natural_key)
            alc, l95, l100, c95, c100, f95, cf95 = {}, {}, {}, {}, {}, {}, {}
            i95, ci95 = {}, {}
            for seed in seeds:
                target = full.get(seed, float("nan"))
                values: dict[str, list] = {}  # per measure, one (value, censored) per draw
                for n, y in curves[st][seed]:
                    ok = n.size and n_min <= n_max
                    a = area_under_curve(n, y, n_min, n_max) if ok else float("nan")
                    values.setdefault("alc", []).append((a, False))
                    values.setdefault("l95", []).append(
                        _censored_labels(n, y, 0.95 * target, budget)
                    )
                    values.setdefault("l100", []).append(_censored_labels(n, y, target, budget))
                    values.setdefault("i95", []).append(
                        _censored_labels(n, y, 0.95 * target, budget, interpolate=True)
                    )
                for fx, fy in fraction_curves[st][seed]:
                    values.setdefault("f95", []).append(
                        _censored_labels(fx, fy, 0.95 * target, FRACTION)
                        if fx.size
                        else (float("nan"), False)
                    )
                # a seed's draws are averaged (censored if any draw is: then a bound)
                for key, (out, cens) in {
                    "alc": (alc, None),
                    "l95": (l95, c95),
                    "l100": (l100, c100),
                    "i95": (i95, ci95),
                    "f95": (f95, cf95),
                }.items():
                    vals = values.get(key) or [(float("nan"), False)]
                    out[seed] = _mean(v for v, _ in vals)
                    if cens is not None:
                        cens[seed] = any(c for _, c in vals)
            exact = budget == N_LABELLED
            by_budget = {}
            for b, vals in zip(points, _values_at(curves[st], seeds, points, exact)):
                if vals:
                    by_budget[_fmt_budget(b, budget)] = _cell(vals)
            curve = {"x": [], "mean": [], "ci_low": [], "ci_high": [], "n": []}
            for b, vals in zip(curve_x, _values_at(curves[st], seeds, curve_x, exact)):
                if vals:
                    cell = _cell(vals)
                    curve["x"].append(float(b))
                    for k in ("mean", "ci_low", "ci_high", "n"):
                        curve[k].append(cell[k])
            per_class = {}
            if axonmyelin and math.isfinite(n_max):
                for metric in CLASS_METRICS:
                    vals = []
                    for s in seeds:
                        v = _mean(
                            interpolate_at(
                                *learning_curve(d, metric=metric, budget=budget), [n_max]
                            )[0]
                            for d in draws(per[s])
                        )
                        if math.isfinite(v):
                            vals.append(float(v))
                    per_class[metric] = _cell(vals)
            lab = _lab_at_end([draws(per[s]) for s in seeds]) if axonmyelin else {}
            aim = _aim_block(per, seeds, full) if axonmyelin else None
            total, rounds_restarted, collapsed = 0, 0, []
            for s in seeds:
                for k, d in enumerate(draws(per[s])):
                    t, n = run_restarts(d)
                    total, rounds_restarted = total + t, rounds_restarted + n
                    draw = f" draw {k + 1}" if k else ""
                    collapsed += [f"seed {s}{draw} round {r}" for r in collapsed_rounds(d)]
            n_draws = sum(len(draws(per[s])) for s in seeds)
            st_out[st] = {
                "n_seeds": len(seeds),
                "seeds": seeds,
                **({"n_draws": n_draws} if n_draws > len(seeds) else {}),
                "n_unfinished": sum(
                    not d.get("_finished", True) for s in seeds for d in draws(per[s])
                ),
                "paths": [d.get("_path") for s in seeds for d in draws(per[s])],
                "dice_by_budget": by_budget,
                "curve": curve,
                "per_class_at_end": per_class,
                **({"lab_at_end": lab} if lab else {}),
                **({"effort_to_aim": aim} if aim else {}),
                "alc": _stat_block(alc),
                "alc_per_subject": {
                    str(seed): _subject_alc(draws(per[seed]), budget, n_min, n_max)
                    for seed in seeds
                },
                "labels_to_95": _stat_block(l95, c95),
                "labels_to_100": _stat_block(l100, c100),
                "labels_to_95_interpolated": _stat_block(i95, ci95),
                "budget_fraction_to_95": _stat_block(f95, cf95),
                "restarts": {"total": total, "rounds": rounds_restarted},
                "collapsed": collapsed,
                "acquire_seconds": _stat_block(
                    {s: _mean(acquire_seconds(d) for d in draws(per[s])) for s in seeds}
                ),
            }
        _paired_stats(st_out, baseline, ds_notes)
        steps = budget_steps(c for per in curves.values() for cs in per.values() for c in cs)
        if baseline is not None and len(st_out) > 1 and math.isfinite(steps[1]):
            ds_notes.append(
                f"budget grid: consecutive rounds' budgets differ by {steps[0]:.2f}x to "
                f"{steps[1]:.2f}x, so a seed's budget to 95% read off the rounds (the saving "
                "column) resolves a ratio only to those steps; the interpolated saving reads it "
                "between rounds (a straight curve assumed)"
            )
        kept = [f"{st}: {', '.join(s['collapsed'])}" for st, s in st_out.items() if s["collapsed"]]
        if kept:
            ds_notes.append(
                "rounds kept collapsed (still collapsed when the restarts ran out; their scores "
                f"stay in the curves): {'; '.join(kept)}"
            )
        restarts_total = sum(s["restarts"]["total"] for s in st_out.values())
        if reference is not None:
            restarts_total += reference["restarts"]
        has_fraction = any(
            c[0].size for per in fraction_curves.values() for cs in per.values() for c in cs
        )
        metrics = ("dice", *CLASS_METRICS) if axonmyelin else ("dice",)
        datasets[ds] = {
            "dataset": str(members[0]["dataset"]),
            "unit": unit,
            "budget_axis": budget,
            "tile_sizes": sorted({r["tile_size"] for r in members if r.get("tile_size")}),
            "tasks": sorted({str(r.get("task", "?")) for r in members}),
            "axonmyelin": axonmyelin,
            "has_pixel_fraction": has_fraction,
            "baseline": baseline,
            "alc_range": [n_min, n_max],
            "budgets": [_fmt_budget(b, budget) for b in points],
            "budget_points": points,
            "full_data": {
                "source": ds_full_source,
                "per_seed": {str(s): v for s, v in full.items()},
                "source_per_seed": {str(s): v for s, v in full_source.items()},
                "note": full_note,
                "reference": reference,
            },
            "strategies": st_out,
            "per_subject": _per_subject(strategies, order, full_runs, n_max, budget, metrics),
            "restarts_total": restarts_total,
            "machines": ran_on,
            "round_0_apart": apart,
            "notes": ds_notes,
        }
    n_unfinished = sum(not r.get("_finished", True) for r in runs)
    if n_unfinished:
        notes.append(f"{n_unfinished} unfinished run(s) included with the rounds they completed")
    return _jsonable({"n_runs": len(runs), "datasets": datasets, "notes": notes})


def correction_seconds(run: Mapping, cost: Mapping[str, float]) -> float:
    """A run's total correction seconds re-costed under ``cost`` (al.cost keys) from its
    recorded fiber counts: overhead per picked unit, then per fiber checked/fixed/drawn/deleted."""
    from axal.morphometrics import CostModel

    rounds = run.get("rounds") or []
    total = next(
        (r["correction_total"] for r in reversed(rounds) if r.get("correction_total")), None
    )
    if total is None:
        return float("nan")
    units = sum(len(r.get("selected") or []) for r in rounds if r.get("correction"))
    c = {**vars(CostModel()), **dict(cost)}
    return c["overhead"] * units + sum(
        c[k] * total.get(f"fibers_{w}", 0)
        for k, w in (
            ("check", "checked"),
            ("fix", "fixed"),
            ("draw", "drawn"),
            ("delete", "deleted"),
        )
    )


def _lab_at_end(seeds: list[list[Mapping]]) -> dict[str, dict]:
    """Mean and CI over seeds (each a list of draws, averaged) of the last round's lab figures
    and of the correction seconds under each cost setting; empty for runs without them
    (task=myelin)."""

    def last_value(run: Mapping, metric: str) -> float:
        last = _last_round(run)
        v = None if last is None else (last.get("test") or {}).get(metric)
        return float("nan") if v is None else float(v)

    out: dict[str, dict] = {}
    for metric in LAB_METRICS:
        vals = [
            v for runs in seeds if math.isfinite(v := _mean(last_value(r, metric) for r in runs))
        ]
        if vals:
            out[metric] = _cell(vals)
    for name, cost in COST_SETTINGS.items():
        vals = [
            v
            for runs in seeds
            if math.isfinite(v := _mean(correction_seconds(r, cost) for r in runs))
        ]
        if vals:
            out[f"correction_seconds[{name}]"] = _cell(vals)
    return out


def _aim_block(per: Mapping[Any, dict], seeds: list, full: Mapping[Any, float]) -> dict | None:
    """Per seed, the correction seconds to the aim (:func:`effort_to_aim`; a seed's draws
    averaged, censored if any draw is); None when no round has the measures."""
    spent, censored = {}, {}
    for seed in seeds:
        values = [effort_to_aim(d, full.get(seed, float("nan"))) for d in draws(per[seed])]
        spent[seed] = _mean(v for v, _ in values)
        censored[seed] = any(c for _, c in values)
    if not any(math.isfinite(v) for v in spent.values()):
        return None
    block = _stat_block(spent, censored)
    block["n_reached"] = sum(1 for s in seeds if math.isfinite(spent[s]) and not censored[s])
    return block


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


def _ratio_with_ci(cur: dict, base: dict) -> tuple[float, list[float], list[str], list[str]]:
    """mean(strategy)/mean(random) over seeds finite in both, its bootstrap CI, seeds, censored."""
    seeds = [
        s
        for s in cur["per_seed"]
        if s in base["per_seed"]
        and math.isfinite(_nan(cur["per_seed"][s]))
        and math.isfinite(_nan(base["per_seed"][s]))
    ]
    a = np.array([cur["per_seed"][s] for s in seeds], dtype=float)
    b = np.array([base["per_seed"][s] for s in seeds], dtype=float)
    ratio = float(a.mean() / b.mean()) if seeds and b.mean() > 0 else float("nan")
    lo, hi = bootstrap_ratio_ci(a, b)
    censored = sorted(
        (set(cur.get("censored_seeds", [])) | set(base.get("censored_seeds", []))) & set(seeds),
        key=natural_key,
    )
    return ratio, [lo, hi], seeds, censored


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _paired_stats(st_out: dict[str, dict], baseline: str | None, ds_notes: list[str]) -> None:
    """Wilcoxon and MDE on ALC, Holm across strategies, bootstrap CIs of the budget ratios."""
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
        mde = mde_paired([a[i] for i in ok], [b[i] for i in ok])
        diffs = [a[i] - b[i] for i in ok]
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
        ratio, ci, l_seeds, censored = _ratio_with_ci(cur["labels_to_95"], base["labels_to_95"])
        i_ratio, i_ci, _, _ = _ratio_with_ci(
            cur["labels_to_95_interpolated"], base["labels_to_95_interpolated"]
        )
        f_ratio, f_ci, f_seeds, _ = _ratio_with_ci(
            cur["budget_fraction_to_95"], base["budget_fraction_to_95"]
        )
        notes = [note] if note else []
        if len(l_seeds) < BOOTSTRAP_MIN_SEEDS:
            notes.append(
                f"ratio CIs not computed: {len(l_seeds)} paired seed(s), a bootstrap needs "
                f"{BOOTSTRAP_MIN_SEEDS}"
            )
        if censored:
            notes.append(
                "censored labels-to-95% (never reached, counted as a bound) "
                f"for seed(s) {', '.join(censored)}: ratio is a bound, not an estimate"
            )
        cur["stats"] = {
            "n_paired": len(ok),
            "n_paired_labels": len(l_seeds),
            "wilcoxon_p": p,
            "p_holm": float("nan"),
            "mde_alc": mde,
            "alc_diff_mean": (float(np.mean([a[i] - b[i] for i in ok])) if ok else float("nan")),
            "ratio": ratio,
            "saving_95": 1.0 - ratio if math.isfinite(ratio) else float("nan"),
            "ratio_ci": ci,
            "fraction_ratio": f_ratio,
            "fraction_ratio_ci": f_ci,
            "n_paired_fraction": len(f_seeds),
            "ratio_interpolated": i_ratio,
            "ratio_interpolated_ci": i_ci,
            "saving_95_interpolated": 1.0 - i_ratio if math.isfinite(i_ratio) else float("nan"),
            "alc_diff_sd": sd,
            "seeds_for_1_point": seeds_for_difference(sd, ONE_POINT),
            "mixed": _mixed(cur["alc_per_subject"], base["alc_per_subject"]),
            "first_to_95": _first(cur["labels_to_95"], base["labels_to_95"]),
            "note": "; ".join(notes),
        }
        if cur.get("effort_to_aim") and base.get("effort_to_aim"):
            cur["stats"]["aim"] = _aim_ratio(cur["effort_to_aim"], base["effort_to_aim"])
        cur["saving_95"] = cur["stats"]["saving_95"]
        cur["mde_alc"] = mde
    for st, padj in zip(others, holm(pvals), strict=True):
        st_out[st]["stats"]["p_holm"] = float(padj)
    base["saving_95"] = 0.0
    if others:
        ds_notes.append(
            f"p-values: two-sided Wilcoxon signed-rank on per-seed ALC vs {baseline}, "
            f"Holm-corrected across {len(others)} strateg{'y' if len(others) == 1 else 'ies'}"
        )


def _aim_ratio(cur: dict, base: dict) -> dict:
    """The arm's correction seconds to the aim over random's (paired by seed, bootstrap CI)
    and the verdict: reached only when every paired seed of the arm reached the aim and the
    CI's upper bound is below ``AIM_EFFORT_RATIO``, over at least ``BOOTSTRAP_MIN_SEEDS`` seeds
    (fewer have no interval). A censored random makes the ratio too high (conservative); a
    censored arm makes it too low, so the aim is not reached then."""
    ratio, ci, seeds, _ = _ratio_with_ci(cur, base)
    arm_censored = sorted(set(cur.get("censored_seeds", [])) & set(seeds), key=natural_key)
    base_censored = sorted(set(base.get("censored_seeds", [])) & set(seeds), key=natural_key)
    hi = _nan(ci[1])
    if len(seeds) < BOOTSTRAP_MIN_SEEDS or not math.isfinite(hi):
        verdict = f"not shown ({len(seeds)} paired seeds; a verdict needs {BOOTSTRAP_MIN_SEEDS})"
    elif arm_censored:
        verdict = f"not reached ({len(arm_censored)} seed(s) never reach the aim)"
    elif hi < AIM_EFFORT_RATIO:
        verdict = "reached"
    else:
        verdict = f"not reached (CI upper bound {hi:.2f} >= {AIM_EFFORT_RATIO})"
    return {
        "ratio": ratio,
        "ratio_ci": ci,
        "n_paired": len(seeds),
        "arm_censored_seeds": arm_censored,
        "random_censored_seeds": base_censored,
        "verdict": verdict,
        "first": _first(cur, base),
    }


def _first(cur: dict, base: dict) -> dict:
    """Seed by seed, which of the two reaches the target for less (censoring-aware)."""
    return first_to_reach(
        cur["per_seed"],
        cur.get("censored_seeds", []),
        base["per_seed"],
        base.get("censored_seeds", []),
    )


def _mixed(cur: Mapping[str, Mapping], base: Mapping[str, Mapping]) -> dict:
    """The mixed model of the per-subject ALC differences, paired by seed and test subject."""
    diffs, subjects = [], []
    for seed, per in cur.items():
        for subject, value in per.items():
            other = (base.get(seed) or {}).get(subject)
            if other is not None and math.isfinite(value) and math.isfinite(other):
                diffs.append(value - other)
                subjects.append(subject)
    return mixed_model_difference(diffs, subjects)


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
