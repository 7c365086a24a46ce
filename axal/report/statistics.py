"""Numbers behind the report: learning curves on either budget axis, normalised ALC, budget
to reach a target, and the paired-by-seed statistics (Holm, t intervals, bootstrap, Wilcoxon,
minimum detectable difference), the mixed model per test subject, the exact
paired-t seed count, and the sign test of which arm reaches a target first.

Pure functions of run dicts and arrays, so each number can be checked by hand in the tests.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0
# a percentile bootstrap over fewer seeds has too few distinct resamples to be an interval
# (3 seeds: 10, and the "95%" bounds are the extreme seeds): no interval is printed below this
BOOTSTRAP_MIN_SEEDS = 5
N_LABELLED = "n_labelled"  # budget axis: labelled units (images, or tiles)
FRACTION = "labelled_fraction"  # budget axis: labelled pixels / pixels of the training pool
BUDGET_AXES = (N_LABELLED, FRACTION)


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


def collapsed_rounds(run: Mapping) -> list[int]:
    """Rounds whose kept model still failed the collapse check once its restarts ran out.

    Their scores stay in the curves (dropping them would flatter the arm), so the report names
    them instead.
    """
    rounds = run.get("rounds", [])
    return [int(r.get("round", i)) for i, r in enumerate(rounds) if r.get("collapsed")]


# --------------------------------------------------------------------------------------------
# Curve metrics
# --------------------------------------------------------------------------------------------
def learning_curve(
    run: Mapping, metric: str = "dice", budget: str = N_LABELLED
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
        if budget == N_LABELLED:
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


# The aim of a lever (issue 23): 95% of the full-data Dice with the mean g-ratio within 0.01 of
# the truth, for at most half of random's correction seconds (the CI's upper bound below 0.5).
AIM_DICE_FRACTION = 0.95
AIM_GRATIO_ERROR = 0.01
AIM_EFFORT_RATIO = 0.5


def effort_to_aim(run: Mapping, full_dice: float) -> tuple[float, bool]:
    """(correction seconds, censored): the seconds spent correcting predicted masks before the
    first round whose test Dice reaches ``AIM_DICE_FRACTION`` x ``full_dice`` with a g-ratio
    error of at most ``AIM_GRATIO_ERROR``.

    Round r's ``correction`` costs the units picked after round r (corrected from round r's
    predictions), which round r + 1 trains on; the initial units, drawn before any model, are
    the same for every arm of a seed and left out. Never reached: the run's total, censored
    (a lower bound). nan when a round lacks the measures (task=myelin, older runs).
    """
    if not math.isfinite(full_dice):
        return float("nan"), False
    spent = 0.0
    for record in run.get("rounds") or []:
        test = record.get("test") or {}
        dice, gratio = test.get("dice"), test.get("gratio_error")
        if dice is None or gratio is None:
            return float("nan"), False
        if dice >= AIM_DICE_FRACTION * full_dice and gratio <= AIM_GRATIO_ERROR:
            return spent, False
        correction = record.get("correction")
        if correction is not None:
            spent += float(correction["correction_seconds"])
    return spent, True


def first_to_reach(
    arm: Mapping[str, float | None],
    arm_censored: Iterable[str],
    base: Mapping[str, float | None],
    base_censored: Iterable[str],
) -> dict:
    """Which of two arms reaches a target for less, seed by seed, when some seeds never reach
    it; and an exact two-sided sign test over the seeds the data decide.

    A value is what a seed spent to reach the target; a censored one never reached it, so its
    true cost lies above the value (a lower bound). A ratio of means counts a bound as if it
    were a cost, which a censored seed on either side pushes in its own direction; this is
    Gehan's scoring of paired censored observations instead. A seed is decided when both
    reached (the lower wins; equal is a tie) or when one reached for less than the other spent
    without reaching; it is undecided when both never reached, or when the one that reached
    spent more than the other's bound. Seeds not finite in both are left out. The effect size
    is the share of decided seeds the arm wins, with its exact binomial interval.
    """
    arm_c, base_c = {str(s) for s in arm_censored}, {str(s) for s in base_censored}
    out: dict[str, Any] = {"arm_first": [], "base_first": [], "tied": [], "undecided": []}
    for seed in arm:
        a, b = (math.nan if v is None else float(v) for v in (arm[seed], base.get(seed)))
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        ca, cb = str(seed) in arm_c, str(seed) in base_c
        if ca and cb:
            outcome = "undecided"
        elif ca:
            outcome = "base_first" if b < a else "undecided"
        elif cb:
            outcome = "arm_first" if a < b else "undecided"
        else:
            outcome = "arm_first" if a < b else "base_first" if b < a else "tied"
        out[outcome].append(str(seed))
    wins, losses = len(out["arm_first"]), len(out["base_first"])
    n = wins + losses
    out["n_decided"] = n
    test = stats.binomtest(wins, n, 0.5) if n else None
    out["sign_p"] = float(test.pvalue) if test else float("nan")
    # the effect size: the share of decided seeds the arm wins (0.5: neither is ahead), with
    # its exact (Clopper-Pearson) 95% interval
    out["share_first"] = wins / n if n else float("nan")
    ci = test.proportion_ci(method="exact") if test else None
    out["share_first_ci"] = [float(ci.low), float(ci.high)] if ci else [math.nan, math.nan]
    # with n decided seeds a two-sided sign test cannot go below 2 / 2**n
    out["min_p"] = 2.0 / 2**n if n else float("nan")
    return out


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
    min_seeds: int = BOOTSTRAP_MIN_SEEDS,
) -> tuple[float, float]:
    """Paired percentile bootstrap CI of mean(numer)/mean(denom), resampling seeds; (nan, nan)
    with fewer than ``min_seeds`` pairs.

    Seeds are resampled jointly because both strategies share a seed's split and initial set.
    """
    a = np.asarray(numer, dtype=float)
    b = np.asarray(denom, dtype=float)
    if a.shape != b.shape or a.size < max(2, min_seeds):
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


def labels_to_reach_interpolated(
    n: Sequence[float] | np.ndarray, dice: Sequence[float] | np.ndarray, target: float
) -> float:
    """Budget at which the curve first reaches ``target``, linear between the two rounds that
    straddle it (the first round's budget if it already does); nan if never reached.

    :func:`labels_to_reach` can only answer with a round's budget, so one seed's saving moves
    in steps of the budget grid (a grid that doubles resolves 0.5 or 2, not 1.5); this one
    resolves finer, assuming a straight curve between rounds.
    """
    n = np.asarray(n, dtype=float)
    y = np.asarray(dice, dtype=float)
    if not math.isfinite(target) or n.size == 0:
        return float("nan")
    order = np.argsort(n, kind="stable")
    n, y = n[order], y[order]
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return float("nan")
    j = int(hit[0])
    if j == 0:
        return float(n[0])
    x0, x1, y0, y1 = n[j - 1], n[j], y[j - 1], y[j]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def budget_steps(curves: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(smallest, largest) factor between consecutive budgets of the runs' curves: the finest
    and the coarsest per-seed budget ratio that reading budgets off the rounds can resolve."""
    ratios = []
    for x, _ in curves:
        x = np.sort(np.asarray(x, dtype=float))
        x = x[x > 0]
        if x.size > 1:
            ratios.extend((x[1:] / x[:-1]).tolist())
    if not ratios:
        return float("nan"), float("nan")
    return float(min(ratios)), float(max(ratios))


def seeds_for_difference(
    sd: float, difference: float, alpha: float = 0.05, power: float = 0.8, max_n: int = 100_000
) -> int | None:
    """Smallest number of paired seeds at which a two-sided paired t test (level ``alpha``)
    detects a true mean difference ``difference`` with probability ``power``, when the per-seed
    differences have standard deviation ``sd``.

    Exact: the power is that of the noncentral t (df n−1, noncentrality difference·√n/sd),
    not the normal approximation, which undercounts at small n. None when sd or the
    difference is not a positive finite number, or more than ``max_n`` seeds are needed.
    """
    if not (math.isfinite(sd) and math.isfinite(difference)) or sd <= 0 or difference == 0:
        return None

    def achieved(n: int) -> float:
        df, nc = n - 1, abs(difference) * math.sqrt(n) / sd
        crit = stats.t.ppf(1 - alpha / 2, df)
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))

    lo, hi = 2, 2
    while achieved(hi) < power:
        lo, hi = hi, hi * 2
        if hi > max_n:
            return None
    while lo < hi:  # power grows with n: the smallest n that reaches it
        mid = (lo + hi) // 2
        if achieved(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return hi


def mixed_model_difference(
    differences: Sequence[float] | np.ndarray,
    subjects: Sequence[str],
    level: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, float | int | str | None]:
    """The mean difference (e.g. a strategy's ALC − random's, one value per seed and test
    subject) under ``difference ~ 1 + (1 | subject)``, fitted by REML (statsmodels MixedLM).

    Returns the estimate, its standard error and a ``level`` CI with t quantiles on
    n_subjects − 1 degrees of freedom (the subjects are the independent units), the
    between-subject and within-subject (seed) variance components (:func:`reml_random_intercept`),
    and the minimum detectable
    difference of this design: (t(1−α/2, df) + t(power, df)) · √((σ²_between + σ²_within / m) /
    n_subjects), m = observations per subject (their mean when unequal). More seeds shrink only
    the σ²_within part; more subjects shrink both. ``shown`` is False when the CI holds 0.
    """
    d = np.asarray(differences, dtype=float)
    groups = np.asarray([str(s) for s in subjects], dtype=object)
    ok = np.isfinite(d)
    d, groups = d[ok], groups[ok]
    names = sorted(set(groups))
    k, n = len(names), int(d.size)
    out: dict[str, float | int | str | None] = {
        "n_subjects": k,
        "n_obs": n,
        "estimate": float("nan"),
        "se": float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "var_between": float("nan"),
        "var_within": float("nan"),
        "obs_per_subject": n / k if k else float("nan"),
        "mde": float("nan"),
        "shown": None,
        "note": "",
    }
    if k < 2 or n <= k:
        out["note"] = (
            f"mixed model not fitted: {k} subject(s), {n} observation(s) (needs 2 subjects and "
            "more observations than subjects)"
        )
        return out
    if np.allclose(d, d[0]):
        out["note"] = "mixed model not fitted: every difference is the same"
        return out
    fit = reml_random_intercept(d, groups)
    var_b, var_w, est, se = fit["var_between"], fit["var_within"], fit["mean"], fit["se"]
    df = k - 1
    half = stats.t.ppf(0.5 + level / 2, df) * se
    out.update(
        estimate=est,
        se=se,
        ci_low=float(est - half),
        ci_high=float(est + half),
        var_between=var_b,
        var_within=var_w,
        mde=design_mde(var_b, var_w, k, n / k, alpha, power),
        shown=bool(est - half > 0 or est + half < 0),
    )
    return out


def design_mde(
    var_between: float,
    var_within: float,
    n_subjects: int,
    seeds_per_subject: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The minimum detectable difference of a design with these variance components: what
    :func:`mixed_model_difference` reports, for planning another number of subjects or seeds."""
    if n_subjects < 2 or seeds_per_subject <= 0:
        return float("nan")
    df = n_subjects - 1
    se = math.sqrt((var_between + var_within / seeds_per_subject) / n_subjects)
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def reml_random_intercept(
    y: Sequence[float] | np.ndarray, groups: Sequence[str]
) -> dict[str, float]:
    """REML fit of ``y ~ 1 + (1 | group)``: the mean, its standard error and the variance
    components (between groups, within groups), as lme4's ``lmer`` or statsmodels' MixedLM
    fit it, in closed form but for one variance ratio γ = σ²_between / σ²_within.

    For a given γ, the mean is the GLS mean (group means weighted n_i / (1 + n_i γ)) and
    σ²_within = Q(γ) / (N − 1) with Q the GLS residual sum of squares; γ ≥ 0 maximises the
    profiled restricted likelihood −½ [(N−1) log Q(γ) + Σ log(1 + n_i γ) + log Σ n_i /
    (1 + n_i γ)], searched on a log grid then refined (bounded, so γ = 0 is a valid answer).
    """
    y = np.asarray(y, dtype=float)
    labels = np.asarray([str(g) for g in groups], dtype=object)
    names = sorted(set(labels))
    n_i = np.array([np.sum(labels == g) for g in names], dtype=float)
    mean_i = np.array([y[labels == g].mean() for g in names])
    ssw = float(sum(((y[labels == g] - m) ** 2).sum() for g, m in zip(names, mean_i)))
    big_n = float(y.size)

    def parts(gamma: float) -> tuple[float, float, float]:
        w = n_i / (1.0 + n_i * gamma)
        mu = float(np.sum(w * mean_i) / np.sum(w))
        q = ssw + float(np.sum(w * (mean_i - mu) ** 2))
        return mu, q, float(np.sum(w))

    def neg_loglik(gamma: float) -> float:
        _, q, sw = parts(gamma)
        q = max(q, 1e-300)
        return 0.5 * (
            (big_n - 1) * math.log(q) + float(np.sum(np.log1p(n_i * gamma))) + math.log(sw)
        )

    from scipy.optimize import minimize_scalar

    grid = [0.0, *np.logspace(-6, 6, 49)]
    best = min(grid, key=neg_loglik)
    j = grid.index(best)
    lo, hi = grid[max(0, j - 1)], grid[min(len(grid) - 1, j + 1)]
    if hi > lo:
        res = minimize_scalar(
            neg_loglik, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
        )
        if res.success and neg_loglik(float(res.x)) <= neg_loglik(best):
            best = float(res.x)
    mu, q, sw = parts(best)
    var_w = q / (big_n - 1)
    return {
        "mean": mu,
        "se": math.sqrt(var_w / sw),
        "var_between": best * var_w,
        "var_within": var_w,
        "gamma": best,
    }
