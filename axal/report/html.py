"""The self-contained ``report.html`` page (figures inlined, no external resources)."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime

from axal.report.statistics import BOOTSTRAP_SEED, N_BOOTSTRAP
from axal.report.summary import _seed_key, strategy_name
from axal.report.tables import _fmt, _fmt_int, _fmt_p, _table_rows

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
