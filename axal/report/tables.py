"""The report's tables and the words that explain them.

Each table is built once as (header, rows of strings) and rendered to markdown and HTML, and
its column definitions are built next to it, so a column never appears without its meaning.
``table.csv`` and ``summary.csv`` hold the same numbers unformatted.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from axal.report.statistics import BOOTSTRAP_SEED, FRACTION, N_BOOTSTRAP, N_LABELLED

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
    "unit",
    "budget_fraction_to_95_mean",
    "mde_alc",
    "restarts",
    "first_to_95_strategy",
    "first_to_95_random",
    "first_to_95_undecided",
    "first_to_95_share",
    "first_to_95_sign_p",
    "first_to_aim_strategy",
    "first_to_aim_random",
    "first_to_aim_undecided",
    "first_to_aim_share",
    "first_to_aim_sign_p",
]
FULL_ROW = "full data"
METRIC_NAMES = {"dice": "Dice", "dice_myelin": "myelin Dice", "dice_axon": "axon Dice"}
Table = tuple[list[str], list[list[str]]]


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


def _fmt_pct(x: Any, digits: int = 3) -> str:
    """A fraction as a percentage with ``digits`` significant digits: 0.05 -> '5%'."""
    x = _num(x)
    return f"{100 * x:.{digits}g}%" if math.isfinite(x) else ""


def _fmt_budget(x: Any, budget: str) -> str:
    """A budget label: '3' (labelled units) or '5%' (labelled-pixel fraction)."""
    return _fmt_pct(x) if budget == FRACTION else _fmt_int(x)


def _fmt_saving(x: Any, is_baseline: bool) -> str:
    if is_baseline:
        return "(baseline)"
    x = _num(x)
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "—"


def _fmt_reach(block: dict, n_seeds: int, budget: str) -> str:
    """mean ± SD of a budget-to-reach, in images or % of pixels, with its censored count."""
    if budget == FRACTION:
        m, sd = _num(block["mean"]), _num(block["std"])
        if not math.isfinite(m):
            return "—"
        txt = f"{100 * m:.1f}%" + (f" ± {100 * sd:.1f}" if math.isfinite(sd) else "")
    else:
        txt = _fmt_pm(block["mean"], block["std"], 1)
    if block.get("n_censored"):
        txt = f"≥{txt} ({block['n_censored']}/{n_seeds} censored)"
    return txt


def _fmt_cell(cell: dict | None, n_seeds: int | None = None) -> str:
    """mean ± SD of a Dice cell; '(n=k)' when fewer seeds than the strategy has."""
    if not cell:
        return "—"
    txt = _fmt_pm(cell["mean"], cell["std"])
    if n_seeds is None or cell["n"] != n_seeds:
        txt += f" (n={cell['n']})"
    return txt


def _fmt_first(first: dict | None) -> list[str]:
    """Two cells of :func:`first_to_reach`: 'arm / random first (undecided, tied)' and the
    sign test's p, with the smallest p its decided seeds allow when that is not small."""
    if not first:
        return ["—", "—"]
    rest = [f"{len(first['undecided'])} undecided"]
    if first["tied"]:
        rest.append(f"{len(first['tied'])} tied")
    share, ci = _num(first.get("share_first")), first.get("share_first_ci") or [None, None]
    won = f"{len(first['arm_first'])} / {len(first['base_first'])}"
    if math.isfinite(share):
        won += f", {100 * share:.0f}% [{100 * _num(ci[0]):.0f}, {100 * _num(ci[1]):.0f}]"
    cells = f"{won} ({', '.join(rest)})"
    p = _fmt_p(first["sign_p"])
    if first["n_decided"] and _num(first["min_p"]) > 0.05:
        p += f" (cannot go below {_fmt_p(first['min_p'])})"
    return [cells, p]


def _fmt_restarts(block: dict) -> str:
    total, rounds = block.get("total", 0), block.get("rounds", 0)
    return f"{total} ({rounds} round{'' if rounds == 1 else 's'})" if total else "0"


def _csv_budget(label: str) -> str:
    """A budget label as a CSV column fragment: '3' -> 'n3', '5%' -> 'p5'."""
    return f"p{label[:-1]}" if label.endswith("%") else f"n{label}"


# --------------------------------------------------------------------------------------------
# Tables, as (header, rows) shared by markdown and HTML
# --------------------------------------------------------------------------------------------
def _is_tile(d: dict) -> bool:
    return d.get("budget_axis", N_LABELLED) == FRACTION


def _range_label(d: dict) -> str:
    lo, hi = (_fmt_budget(v, d.get("budget_axis", N_LABELLED)) for v in d["alc_range"])
    return f"[{lo}, {hi}]" if lo and hi else "(no common range)"


def _show_pixels(d: dict) -> bool:
    """An image study whose runs recorded pixel budgets: also report pixels to 95%."""
    return not _is_tile(d) and bool(d.get("has_pixel_fraction"))


def _end_label(d: dict) -> str:
    hi = _fmt_budget(d["alc_range"][1], d.get("budget_axis", N_LABELLED))
    return f"@{hi}" if _is_tile(d) else f"@n={hi}"


def main_table(d: dict) -> Table:
    """Per strategy: Dice by budget, ALC, budget to 95% / 100%, saving, MDE, restarts, time."""
    tile = _is_tile(d)
    reach = "budget" if tile else "labels"
    budgets = d["budgets"]
    ref = (d.get("full_data") or {}).get("reference")
    head = ["strategy", "n seeds"]
    head += [f"Dice @{b}" if tile else f"Dice n={b}" for b in budgets]
    if ref:
        head.append("Dice, full data")
    if d.get("axonmyelin"):
        head += [f"myelin Dice {_end_label(d)}", f"axon Dice {_end_label(d)}"]
    head += [f"norm. ALC {_range_label(d)}", f"{reach} to 95%", f"{reach} to 100%"]
    if _show_pixels(d):
        head.append("pixels to 95%")
    head += ["saving vs random @95%", "MDE (ALC)", "restarts", "acquire s/round"]
    body = []
    for st, s in d["strategies"].items():
        row = [st, str(s["n_seeds"])]
        row += [_fmt_cell(s["dice_by_budget"].get(b), s["n_seeds"]) for b in budgets]
        if ref:
            row.append("—")
        if d.get("axonmyelin"):
            pc = s.get("per_class_at_end") or {}
            row += [_fmt_cell(pc.get(m), s["n_seeds"]) for m in ("dice_myelin", "dice_axon")]
        row += [
            _fmt_pm(s["alc"]["mean"], s["alc"]["std"]),
            _fmt_reach(s["labels_to_95"], s["n_seeds"], d.get("budget_axis", N_LABELLED)),
            _fmt_reach(s["labels_to_100"], s["n_seeds"], d.get("budget_axis", N_LABELLED)),
        ]
        if _show_pixels(d):
            row.append(_fmt_reach(s["budget_fraction_to_95"], s["n_seeds"], FRACTION))
        row += [
            _fmt_saving(s.get("saving_95"), st == d["baseline"]),
            "—" if st == d["baseline"] else _fmt(s.get("mde_alc")),
            _fmt_restarts(s.get("restarts") or {}),
            _fmt(s["acquire_seconds"]["mean"], 1),
        ]
        body.append(row)
    if ref:
        row = [FULL_ROW, str(ref["n_seeds"])] + ["—"] * len(budgets)
        row.append(_fmt_pm(ref["mean"], ref["std"]))
        if d.get("axonmyelin"):
            row += ["—", "—"]
        row += ["—", "100% (reference)" if tile else "all (reference)", "—"]
        if _show_pixels(d):
            row.append("100% (reference)")
        row += ["—", "—", str(ref.get("restarts", 0)), "—"]
        body.append(row)
    return head, body


def lab_table(d: dict) -> Table | None:
    """What a lab measures at the end of the budget (task=axonmyelin): fiber F1, morphometric
    errors, and the correction seconds with the strategies' rank under each cost setting."""
    labs = {st: s["lab_at_end"] for st, s in d["strategies"].items() if s.get("lab_at_end")}
    if not labs:
        return None
    from axal.report.summary import COST_SETTINGS, LAB_METRICS

    settings = [f"correction_seconds[{name}]" for name in COST_SETTINGS]
    ranks = {}
    for key in settings:
        order = sorted(labs, key=lambda st: _num((labs[st].get(key) or {}).get("mean")))
        ranks[key] = {st: i + 1 for i, st in enumerate(order)}
    head = ["strategy"] + [f"{m} {_end_label(d)}" for m in LAB_METRICS]
    head += [f"correction s, {name} (rank)" for name in COST_SETTINGS]
    body = []
    for st, lab in labs.items():
        n = d["strategies"][st]["n_seeds"]
        row = [st] + [_fmt_cell(lab.get(m), n) for m in LAB_METRICS]
        row += [f"{_fmt_cell(lab.get(k), n)} ({ranks[k][st]})" for k in settings]
        body.append(row)
    return head, body


def aim_table(d: dict) -> Table | None:
    """Per arm: how many seeds reach the aim (95% of the full-data Dice with the g-ratio within
    0.01) within the budget, the correction seconds spent before it, the ratio to random's and
    whether the aim (that ratio's CI below 0.5) is reached; None without the measures."""
    arms = {st: s for st, s in d["strategies"].items() if s.get("effort_to_aim")}
    if not arms:
        return None
    head = [
        "strategy",
        "seeds reaching the aim",
        "correction s to the aim (mean ± SD)",
        "ratio to random",
        "bootstrap 95% CI",
        "aim (CI upper bound < 0.5)",
        "first to the aim: strategy / random",
        "sign test p",
    ]
    body = []
    for st, s in arms.items():
        block, aim = s["effort_to_aim"], (s.get("stats") or {}).get("aim")
        n = len(block["per_seed"])
        cens = f", {block['n_censored']} censored (lower bound)" if block["n_censored"] else ""
        row = [
            st,
            f"{block['n_reached']} of {n}",
            f"{_fmt_pm(block['mean'], block['std'], 0)}{cens}",
        ]
        if aim:
            ci = aim["ratio_ci"]
            row += [_fmt(aim["ratio"]), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", aim["verdict"]]
            row += _fmt_first(aim.get("first"))
        else:
            row += ["(baseline)" if st == d.get("baseline") else "—", "", "", "", ""]
        body.append(row)
    return head, body


FIRST_RULE = (
    "seeds on which the strategy reaches it for less than random / seeds on which random does "
    "(random's draws averaged), then the share of the decided seeds the strategy wins with its "
    "exact binomial 95% interval (50%: neither is ahead), counting censoring as Gehan's "
    "scoring does: a seed that never "
    "reaches it spent more than its bound, so it loses to a seed that reached for less than "
    "that bound; the seed is undecided when neither reaches, or when the one that reached "
    "spent more than the other's bound. The sign test p is the exact two-sided binomial test "
    "of the decided seeds (ties left out); with n decided seeds it cannot go below 2 / 2^n, so "
    "a large p from few decided seeds means not shown, not no difference"
)


def aim_definitions(d: dict) -> list[tuple[str, str]]:
    """Meaning of the aim table's columns."""
    source = (d.get("full_data") or {}).get("source")
    target = (
        "the full-data reference runs' Dice on the seed's test set (mean of their replicates)"
        if source == "full_runs"
        else "random's last-round Dice on the seed (no full-data run in this report): a "
        "stand-in, lower than the full-data Dice"
    )
    return [
        (
            "the aim",
            "a round whose test Dice is at least 95% of the target Dice and whose mean g-ratio "
            f"is within 0.01 of the truth (gratio_error); the target is {target}",
        ),
        (
            "correction s to the aim",
            "annotator seconds (al.cost) to correct the predicted masks of every unit picked "
            "before the first round that meets the aim; the initial units (drawn from scratch, "
            "the same for every arm of a seed) are left out. A seed that never meets it counts "
            "its run's total, censored: a lower bound",
        ),
        (
            "ratio to random",
            "mean correction seconds to the aim over random's, over the seeds finite in both "
            "(random's replicates averaged within a seed), with a paired percentile bootstrap "
            "over seeds; the aim is reached when its upper bound is below 0.5 and every seed "
            "of the arm meets it; not shown with fewer than 5 paired seeds (a bootstrap over fewer "
            "has too few distinct resamples to be an interval)",
        ),
        ("first to the aim", f"{FIRST_RULE}."),
    ]


def stats_table(d: dict) -> Table | None:
    """Paired-by-seed comparison of each strategy with random; None without a baseline."""
    rows = [(st, s["stats"]) for st, s in d["strategies"].items() if s.get("stats")]
    if not rows:
        return None
    reach = "budget" if _is_tile(d) else "labels"
    head = [
        "strategy",
        "n paired seeds",
        "ALC diff (mean)",
        "MDE (ALC)",
        "Wilcoxon p (ALC)",
        "Holm p",
        f"{reach} ratio @95%",
        "bootstrap 95% CI",
    ]
    if _show_pixels(d):
        head += ["pixel ratio @95%", "pixel ratio 95% CI"]
    head += ["saving @95%, interpolated", "seeds for 1 point"]
    head += ["first to 95%: strategy / random", "sign test p", "note"]
    body = []
    for st, s in rows:
        row = [
            st,
            str(s["n_paired"]),
            _fmt_signed(s.get("alc_diff_mean")),
            _fmt(s.get("mde_alc")),
            _fmt_p(s["wilcoxon_p"]),
            _fmt_p(s["p_holm"]),
            _fmt(s["ratio"]),
            f"[{_fmt(s['ratio_ci'][0])}, {_fmt(s['ratio_ci'][1])}]",
        ]
        if _show_pixels(d):
            ci = s.get("fraction_ratio_ci") or [None, None]
            row += [_fmt(s.get("fraction_ratio")), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"]
        ici = s.get("ratio_interpolated_ci") or [None, None]
        saving = _num(s.get("saving_95_interpolated"))
        row.append(
            f"{100 * saving:+.1f}% [{_fmt_saving_ci(ici)}]" if math.isfinite(saving) else "—"
        )
        n1 = s.get("seeds_for_1_point")
        row.append(str(n1) if n1 else "—")
        row += _fmt_first(s.get("first_to_95"))
        row.append(s["note"] or "")
        body.append(row)
    return head, body


def _fmt_saving_ci(ci: list) -> str:
    """A ratio CI [lo, hi] as the saving interval 1 − ratio: [1 − hi, 1 − lo], in %."""
    lo, hi = (_num(v) for v in ci)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"{100 * (1 - hi):+.0f}%, {100 * (1 - lo):+.0f}%"


def mixed_table(d: dict) -> Table | None:
    """Per strategy: the ALC difference vs random under a mixed model with the test subject as
    a random effect, its 95% CI, the variance components and the design's MDE."""
    rows = [(st, s["stats"]["mixed"]) for st, s in d["strategies"].items() if s.get("stats")]
    rows = [(st, m) for st, m in rows if m]
    if not rows:
        return None
    head = [
        "strategy",
        "subjects",
        "observations",
        "ALC diff (mixed model)",
        "95% CI",
        "SD between subjects",
        "SD within (seeds)",
        "MDE (design)",
        "gain",
    ]
    body = []
    for st, m in rows:
        ok = math.isfinite(_num(m.get("estimate")))
        if not ok:
            body.append([st, str(m["n_subjects"]), str(m["n_obs"]), "—", "—", "—", "—", "—", ""])
            continue
        verdict = (
            "not shown (CI holds 0)"
            if not m.get("shown")
            else ("shown" if _num(m["estimate"]) > 0 else "shown: a loss")
        )
        body.append(
            [
                st,
                str(m["n_subjects"]),
                str(m["n_obs"]),
                _fmt_signed(m["estimate"]),
                f"[{_fmt_signed(m['ci_low'])}, {_fmt_signed(m['ci_high'])}]",
                _fmt(math.sqrt(_num(m["var_between"]))),
                _fmt(math.sqrt(_num(m["var_within"]))),
                _fmt(m["mde"]),
                verdict,
            ]
        )
    return head, body


def mixed_definitions() -> list[tuple[str, str]]:
    """Meaning of the mixed-model columns."""
    return [
        (
            "ALC diff (mixed model)",
            "one observation per seed and test subject: the normalised ALC of that subject's "
            "own Dice curve (same budget range) minus random's, a seed's replicates averaged; "
            "fitted as difference ~ 1 + (1 | subject) by REML. Subjects tested in the same "
            "seed share a model; with leave-one-subject-out folds each seed tests one.",
        ),
        (
            "95% CI",
            "estimate ± t(0.975, subjects − 1) × its standard error: the subjects are the "
            "independent units. 'not shown' when it holds 0: the data exclude neither no gain "
            "nor a gain up to its upper end.",
        ),
        (
            "SD between subjects / within (seeds)",
            "square roots of the REML variance components: how much the gain differs from "
            "subject to subject, and from seed to seed on one subject.",
        ),
        (
            "MDE (design)",
            "minimum detectable difference of this design: (t(0.975, df) + t(0.8, df)) × "
            "√((σ²between + σ²within / m) / subjects), m = seeds per subject, df = subjects − "
            "1 (two-sided α = 0.05, power 0.8). More seeds shrink only the within part; more "
            "subjects shrink both.",
        ),
    ]


def _fmt_signed(x: Any) -> str:
    x = _num(x)
    return f"{x:+.3f}" if math.isfinite(x) else "—"


def subject_tables(d: dict) -> list[tuple[str, Table]]:
    """Per metric: test subject x strategy (and full data), mean ± SD (n seeds tested)."""
    out = []
    names = [*d["strategies"], FULL_ROW]
    for metric, per_subject in (d.get("per_subject") or {}).items():
        cols = [n for n in names if any(n in row for row in per_subject.values())]
        head = ["test subject", *cols]
        body = [[subj, *[_fmt_cell(row.get(c)) for c in cols]] for subj, row in per_subject.items()]
        out.append((METRIC_NAMES.get(metric, metric), (head, body)))
    return out


# --------------------------------------------------------------------------------------------
# Definitions: every column and symbol, worded for the group's budget axis
# --------------------------------------------------------------------------------------------
def definitions(d: dict) -> list[tuple[str, str]]:
    """(term, meaning) for every column and symbol of the group's tables and figure."""
    tile = _is_tile(d)
    unit_words = "labelled-pixel fraction of the training pool" if tile else "labelled images"
    bound = "100% of the pool's pixels" if tile else "the largest budget + 1"
    ref = (d.get("full_data") or {}).get("reference")
    if ref:
        target = (
            "the same seed's full-data reference run (strategy full: one model trained on "
            "every training image with the same recipe); a seed without one uses the mean "
            "over the reference seeds (noted)"
        )
    else:
        target = (
            "the Dice of a run that labelled the whole pool, else random's Dice at its last "
            "budget (a fallback, noted below the table), for the same seed"
        )
    terms = [
        (
            "±",
            "standard deviation over seeds (ddof 1), not a confidence interval; no ± with one "
            "seed.",
        ),
        (
            "n seeds",
            "runs of the strategy. A seed fixes the test subjects, the initial labelled set and "
            "each round's initial weights for every strategy, so comparisons are paired by seed.",
        ),
    ]
    if tile:
        pts = ", ".join(d["budgets"]) or "none"
        terms.append(
            (
                "Dice @p%",
                "mean test Dice when p% of the training pool's pixels are labelled. Each seed's "
                "curve is interpolated linearly between its rounds at fixed budgets (0.5, 1, 2, "
                "5, 10, 20, 50, 100% where inside the runs' range; here "
                f"{pts}); (n=k): only k seeds' curves cover that budget.",
            )
        )
    else:
        terms.append(
            (
                "Dice n=k",
                "mean test Dice of the model trained on k labelled images; (n=j): only j seeds "
                "reached that budget.",
            )
        )
    if ref:
        terms.append(
            (
                "full data / Dice, full data",
                f"the full-data reference: {ref['n_seeds']} run(s) trained on every training "
                "image with the same recipe; Dice mean ± SD over their seeds. Not a strategy: "
                "it sets the targets below and takes no part in the paired tests.",
            )
        )
    if d.get("axonmyelin"):
        terms.append(
            (
                "myelin / axon Dice",
                "per-class test Dice at the end of the common budget range "
                f"({_end_label(d)[1:]}), mean ± SD over seeds.",
            )
        )
    reach = "budget" if tile else "labels"
    terms += [
        (
            f"norm. ALC {_range_label(d)}",
            f"area under the learning curve (test Dice against {unit_words}) over the budget "
            "range every run covers, divided by the range's width (trapezoid rule): the mean "
            "Dice over that range, in [0, 1].",
        ),
        (
            f"{reach} to 95% / 100%",
            f"smallest budget ({unit_words}) at which a seed's test Dice reaches 95% (100%) of "
            f"the full-data Dice: {target}. Mean ± SD over seeds. '≥ … (k/n censored)': k seeds "
            f"never reached it and count as {bound}, so the mean is a lower bound.",
        ),
    ]
    if _show_pixels(d):
        terms.append(
            (
                "pixels to 95%",
                "the labelled-pixel fraction of the training pool at the round where Dice first "
                "reaches 95% of the full-data Dice (censored at 100%). Images differ in size, so "
                "images and pixels can rank strategies differently.",
            )
        )
    terms += [
        (
            "saving vs random @95%",
            f"1 − ratio, ratio = mean {reach}-to-95% of the strategy / mean of random over the "
            "paired seeds: +40% means 40% less annotation than random, negative means more.",
        ),
        (
            "MDE (ALC)",
            "minimum detectable ALC difference against random: (t(0.975, n−1) + t(0.8, n−1)) × "
            "SD of the per-seed ALC differences / √n, n paired seeds (paired t, two-sided "
            "α = 0.05, power 0.8). A true difference smaller than this is likely missed, so a "
            "large p means 'no difference larger than the MDE', not 'no difference'.",
        ),
        (
            "restarts",
            "times a round was retrained because the model collapsed, summed over seeds and "
            "rounds (rounds affected in brackets); 0 for runs recorded before restarts existed.",
        ),
        (
            "acquire s/round",
            "mean wall-clock seconds spent scoring the pool and choosing, over the rounds that "
            "chose something (random: no scoring).",
        ),
    ]
    return terms


def stats_definitions(d: dict) -> list[tuple[str, str]]:
    """Meaning of the paired-statistics columns."""
    reach = "budget" if _is_tile(d) else "labels"
    terms = [
        (
            "ALC diff (mean)",
            "mean over paired seeds of (strategy's ALC − random's ALC); positive = better.",
        ),
        (
            "Wilcoxon p (ALC)",
            "two-sided Wilcoxon signed-rank test of the per-seed ALC against random's, paired "
            "by seed (with fewer than 6 seeds, p cannot be small).",
        ),
        (
            "Holm p",
            "the Wilcoxon p adjusted by Holm's step-down method across the strategies of this "
            "table (controls the chance of any false positive).",
        ),
        (
            f"{reach} ratio @95%",
            f"mean {reach}-to-95% of the strategy / mean of random over paired seeds (< 1: "
            f"fewer labels needed). CI: percentile bootstrap over seeds ({N_BOOTSTRAP} "
            f"resamples, seed {BOOTSTRAP_SEED}), both strategies' values of a seed resampled "
            "together.",
        ),
    ]
    if _show_pixels(d):
        terms.append(
            (
                "pixel ratio @95%",
                "the same ratio and bootstrap CI on the labelled-pixel fraction to 95%.",
            )
        )
    terms += [
        (
            "saving @95%, interpolated",
            f"1 − the same ratio, with each seed's {reach}-to-95% interpolated linearly between "
            "the two rounds that straddle the target (censored seeds as above), and its "
            "bootstrap interval. Read off the rounds, one seed's budget can only be a round's "
            "budget, so its ratio moves in steps of the budget grid (the note below names "
            "them).",
        ),
        (
            "seeds for 1 point",
            "paired seeds a two-sided paired t test (α = 0.05) needs to detect a true ALC gain "
            "of 1 Dice point with power 0.8, given the SD of these per-seed ALC differences: "
            "exact, from the noncentral t distribution.",
        ),
        (
            "first to 95%",
            f"the {reach}-to-95% of each paired seed, read as a race: {FIRST_RULE}. Unlike "
            "the ratio, it needs no value for a seed that never reaches 95%.",
        ),
    ]
    return terms


def subject_note(d: dict) -> str:
    """What a per-subject cell is."""
    where = _end_label(d)[1:]
    return (
        "Dice per test subject: mean ± SD over the seeds in which that subject was held out for "
        f"testing (n = those seeds), at each run's last round within the common budget range "
        f"(≤ {where}); the full-data column uses the reference runs."
    )


def figure_note(d: dict | None = None) -> str:
    """What the learning-curve figure shows."""
    return (
        "Line: mean test Dice over seeds; band: 95% Student-t interval of that mean over seeds "
        "(absent with one seed, clipped to [0, 1]); seeds per strategy in the legend. Image "
        "studies plot labelled images (integer ticks), tile studies the labelled-pixel "
        "fraction of the training pool on a log axis (their mean curve is interpolated over "
        "the common range). Dotted line and grey band: full-data Dice, mean and 95% t-interval "
        "over the reference runs (or the fallback's mean, named in the legend)."
    )


# --------------------------------------------------------------------------------------------
# Markdown and CSV
# --------------------------------------------------------------------------------------------
def _md_table(table: Table) -> list[str]:
    head, body = table
    lines = [_md_row(head), "|" + "|".join("---" for _ in head) + "|"]
    return lines + [_md_row(row) for row in body]


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _group_title(name: str, d: dict) -> str:
    if _is_tile(d):
        sizes = d.get("tile_sizes") or []
        size = f", tiles of {'/'.join(str(s) for s in sizes)} px" if sizes else ""
        return f"{name} (unit: tile{size}; budget: labelled pixels, % of pool)"
    return name


def _markdown(summary: dict) -> str:
    lines = ["# Active-learning comparison", ""]
    for ds, d in summary["datasets"].items():
        lines += [f"## {_group_title(ds, d)}", ""]
        lines += _md_table(main_table(d))
        lab = lab_table(d)
        if lab:
            lines += ["", "What a lab measures (fibers, morphometrics, correction effort):", ""]
            lines += _md_table(lab)
            lines += [
                "",
                "- **correction s**: annotator seconds to correct the picking model's prediction "
                "inside every picked unit, summed over the run (al.cost; docs/morphometrics.md), "
                "re-costed under each setting; rank 1 = cheapest.",
            ]
        aim = aim_table(d)
        if aim:
            lines += [
                "",
                "The aim: 95% of the full-data Dice, g-ratio within 0.01, for half "
                "of random's correction seconds:",
                "",
            ]
            lines += _md_table(aim)
            lines += ["", *(f"- **{t}**: {x}" for t, x in aim_definitions(d))]
        st = stats_table(d)
        if st:
            lines += ["", f"Paired statistics vs {d['baseline']} (by seed):", ""]
            lines += _md_table(st)
        mixed = mixed_table(d)
        if mixed:
            lines += ["", f"Per test subject, mixed model vs {d['baseline']}:", ""]
            lines += _md_table(mixed)
        for title, table in subject_tables(d):
            lines += ["", f"{title} per test subject:", ""]
            lines += _md_table(table)
        lines.append("")
        lines += [f"- Note: {note}" for note in d["notes"]]
        if d.get("restarts_total"):
            lines.append(
                f"- Note: {d['restarts_total']} restart(s) in this group (rounds retrained "
                "after a collapse)"
            )
        lines += ["", "Columns and symbols:", ""]
        terms = definitions(d) + (stats_definitions(d) if st else [])
        terms += mixed_definitions() if mixed else []
        lines += [f"- **{term}**: {text}" for term, text in terms]
        if subject_tables(d):
            lines.append(f"- **per test subject**: {subject_note(d)}")
        lines.append(f"- **figure**: {figure_note(d)}")
        lines.append("")
    for note in summary["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def _table_csv(summary: dict) -> str:
    groups = summary["datasets"].values()
    budgets: list[str] = []
    for d in groups:
        budgets += [b for b in d["budgets"] if b not in budgets]
    header = ["dataset", "strategy", "n_seeds"]
    for b in budgets:
        c = _csv_budget(b)
        header += [f"dice_{c}_mean", f"dice_{c}_std", f"dice_{c}_n"]
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
        "unit",
        "budget_axis",
        "budget_fraction_to_95_mean",
        "budget_fraction_to_95_std",
        "budget_fraction_to_95_censored",
        "mde_alc",
        "restarts",
        "restarts_rounds",
        "dice_myelin_end_mean",
        "dice_axon_end_mean",
        "dice_full_data_mean",
        "dice_full_data_std",
        "dice_full_data_n",
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for d in summary["datasets"].values():
        ds = d.get("dataset", "")
        for st, s in d["strategies"].items():
            row: list[Any] = [ds, st, s["n_seeds"]]
            for b in budgets:
                c = s["dice_by_budget"].get(b) if b in d["budgets"] else None
                row += [_csv_num(c["mean"]), _csv_num(c["std"]), c["n"]] if c else ["", "", ""]
            pc = s.get("per_class_at_end") or {}
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
                d.get("unit", "image"),
                d.get("budget_axis", N_LABELLED),
                _csv_num(s["budget_fraction_to_95"]["mean"]),
                _csv_num(s["budget_fraction_to_95"]["std"]),
                s["budget_fraction_to_95"]["n_censored"],
                "" if st == d["baseline"] else _csv_num(s.get("mde_alc")),
                s["restarts"]["total"],
                s["restarts"]["rounds"],
                _csv_num((pc.get("dice_myelin") or {}).get("mean")),
                _csv_num((pc.get("dice_axon") or {}).get("mean")),
                "",
                "",
                "",
            ]
            w.writerow(row)
        ref = d["full_data"].get("reference")
        if ref:
            row = [ds, FULL_ROW, ref["n_seeds"]] + [""] * (len(header) - 9)
            row[header.index("unit")] = d.get("unit", "image")
            row[header.index("budget_axis")] = d.get("budget_axis", N_LABELLED)
            row[header.index("full_data_note")] = d["full_data"]["note"] or ""
            row[header.index("restarts")] = ref.get("restarts", 0)
            row += [_csv_num(ref["mean"]), _csv_num(ref["std"]), ref["n_seeds"]]
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
                    d.get("dataset", ds),
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
                    d.get("unit", "image"),
                    _csv_num(s["budget_fraction_to_95"]["mean"]),
                    "" if is_base else _csv_num(s.get("mde_alc")),
                    s["restarts"]["total"],
                    *_csv_first(None if is_base else stt.get("first_to_95")),
                    *_csv_first(None if is_base else (stt.get("aim") or {}).get("first")),
                ]
            )
    return buf.getvalue()


def _csv_first(first: dict | None) -> list[Any]:
    """summary.csv's five cells of a :func:`first_to_reach`; blank without one."""
    if not first:
        return [""] * 5
    return [
        len(first["arm_first"]),
        len(first["base_first"]),
        len(first["undecided"]),
        _csv_num(first["share_first"]),
        _csv_num(first["sign_p"]),
    ]
