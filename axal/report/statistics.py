"""Numbers behind the report: learning curves on either budget axis, normalised ALC, budget
to reach a target, and the paired-by-seed statistics (Holm, t intervals, bootstrap, Wilcoxon,
minimum detectable difference).

Pure functions of run dicts and arrays, so each number can be checked by hand in the tests.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
UNITS = "n_labelled"  # budget axis: labelled units (images, or tiles)
FRACTION = "labelled_fraction"  # budget axis: labelled pixels / pixels of the training pool
BUDGET_AXES = (UNITS, FRACTION)


# --------------------------------------------------------------------------------------------
# Per-run readings (old runs lack the newer fields: unit=image, restarts 0, no pixel counts)
# --------------------------------------------------------------------------------------------
def run_unit(run: Mapping) -> str:
    """The annotation unit of a run: ``image`` (also for runs recorded before units existed)."""
    return str(run.get("unit") or "image")


def round_fraction(record: Mapping, run: Mapping | None = None) -> float:
    """Labelled-pixel fraction of a round: its ``labelled_fraction``, else pixels / pool pixels.

    nan when the round predates pixel budgets, so callers can tell "unknown" from a value.
    """
    value = record.get("labelled_fraction")
    if value is None and run is not None:
        px, pool = record.get("labelled_pixels"), run.get("pool_pixels")
        if px is not None and pool:
            value = float(px) / float(pool)
    if value is None:
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def run_restarts(run: Mapping) -> tuple[int, int]:
    """(restarts summed over rounds, rounds retrained at least once); (0, 0) for old runs."""
    counts = [int(r.get("restarts") or 0) for r in run.get("rounds", [])]
    return sum(counts), sum(c > 0 for c in counts)


# --------------------------------------------------------------------------------------------
# Curve metrics
# --------------------------------------------------------------------------------------------
def learning_curve(
    run: Mapping, metric: str = "dice", budget: str = UNITS
) -> tuple[np.ndarray, np.ndarray]:
    """(budget, test metric) sorted by budget; rounds without either value are skipped.

    ``budget`` is ``n_labelled`` (labelled units) or ``labelled_fraction`` (labelled pixels as
    a fraction of the training pool's pixels, in [0, 1]).
    """
    if budget not in BUDGET_AXES:
        raise ValueError(f"budget={budget!r} is not one of {BUDGET_AXES}")
    pts = []
    for r in run.get("rounds", []):
        value = (r.get("test") or {}).get(metric)
        if budget == UNITS:
            x = float("nan") if r.get("n_labelled") is None else float(r["n_labelled"])
        else:
            x = round_fraction(r, run)
        if value is None or not math.isfinite(x):
            continue
        value = float(value)
        if math.isfinite(value):
            pts.append((x, value))
    pts.sort(key=lambda t: t[0])
    n = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    return n, y


def interpolate_at(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, points: Iterable[float]
) -> np.ndarray:
    """Linear interpolation of a curve at ``points``; nan outside the curve's own range.

    Tile runs reach different pixel fractions each round, so their seeds are compared at
    common budget points; nothing is extrapolated beyond the budgets a run actually reached.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    pts = np.asarray(list(points), dtype=float)
    if x.size == 0:
        return np.full(pts.shape, np.nan)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    out = np.interp(pts, x, y)
    out[(pts < x[0]) | (pts > x[-1])] = np.nan
    return out


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
    """Smallest budget whose Dice >= target (no interpolation); nan if never reached.

    The budget is whatever ``n`` holds: labelled units, or a labelled-pixel fraction.
    """
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


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def mde_paired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Minimum detectable mean difference of a paired comparison (two-sided, paired t).

    ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd(a - b) / sqrt(n)`` over the pairs where both
    are finite: a true difference smaller than this is likely missed with these seeds, so a
    non-significant p says "no difference larger than the MDE", not "no difference".
    nan with fewer than 2 pairs.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = d.size
    if n < 2:
        return float("nan")
    t_sum = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(t_sum * d.std(ddof=1) / math.sqrt(n))
