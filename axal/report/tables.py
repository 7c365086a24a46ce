"""The report's tables: markdown, table.csv and summary.csv, and the cell formatting."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

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
