"""Numbers behind the report: learning curves, normalised ALC, budget to reach, and the
paired-by-seed statistics (Holm, t intervals, bootstrap, Wilcoxon)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0


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


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")
