"""The ``report.html`` page: figures inlined; each run's per-round maps linked (relative paths).

Every table is followed by the definitions of its columns and symbols, and every figure by
what its lines, bands and panels are, so the page can be read without the code.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from pathlib import Path

from axal.report.figures import map_caption
from axal.report.ordering import natural_key
from axal.report.statistics import run_unit
from axal.report.summary import strategy_name
from axal.report.tables import (
    _group_title,
    aim_definitions,
    aim_table,
    definitions,
    figure_note,
    lab_table,
    main_table,
    mixed_definitions,
    mixed_table,
    stats_definitions,
    stats_table,
    subject_note,
    subject_tables,
)

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
.note{color:#7a4b00;font-size:.9em} .small{color:#666;font-size:.85em}
dl.defs{font-size:.85em;color:#333;display:grid;grid-template-columns:max-content auto;
  gap:.2em 1em;margin:.4em 0 1.4em} dl.defs dt{font-weight:600} dl.defs dd{margin:0}
img{max-width:100%} .maps img{width:380px;margin:2px;border:1px solid #ddd}
figure{display:inline-block;margin:2px} figcaption{color:#666;font-size:.8em}
"""


PAIRED_NOTE = (
    "One panel per strategy: its test Dice minus random's on the same seed (the same split, "
    "initial set and initial weights), in Dice points (x100), at the budgets of its learning curve "
    "(recorded image counts; tile studies interpolate between rounds). Line: the mean "
    "difference over the paired seeds (their number above each panel); band: its 95% Student-t "
    "interval over those seeds (a paired t-interval). Where the band holds zero (dashed line), "
    "no difference from random is shown at that budget. Curves within a point of each other "
    "in the learning-curve figure can differ consistently here, seed by seed, or not at all."
)


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


def _definitions(terms: list[tuple[str, str]]) -> str:
    e = html.escape
    items = "".join(f"<dt>{e(t)}</dt><dd>{e(text)}</dd>" for t, text in terms)
    return f'<dl class="defs">{items}</dl>'


def _group_section(name: str, d: dict) -> list[str]:
    e = html.escape
    parts = [f"<h2>Dataset {e(_group_title(name, d))}</h2>"]
    parts.append(_html_table(*main_table(d)))
    lab = lab_table(d)
    if lab:
        parts.append("<p>What a lab measures (fibers, morphometrics, correction effort):</p>")
        parts.append(_html_table(*lab))
    aim = aim_table(d)
    if aim:
        parts.append(
            "<h3>The aim: 95% of the full-data Dice, g-ratio within 0.01, for half of random's "
            "correction seconds</h3>"
        )
        parts.append(_html_table(*aim))
        parts.append(_definitions(aim_definitions(d)))
    terms = definitions(d)
    st = stats_table(d)
    if st:
        parts.append(_definitions(terms))
        parts.append(f"<h3>Paired statistics vs {e(str(d['baseline']))} (by seed)</h3>")
        parts.append(_html_table(*st))
        parts.append(_definitions(stats_definitions(d)))
        mixed = mixed_table(d)
        if mixed:
            parts.append(f"<h3>Per test subject: mixed model vs {e(str(d['baseline']))}</h3>")
            parts.append(_html_table(*mixed))
            parts.append(_definitions(mixed_definitions()))
    else:
        parts.append(_definitions(terms))
    subjects = subject_tables(d)
    if subjects:
        parts.append("<h3>Dice per test subject</h3>")
        parts.append(f'<p class="small">{e(subject_note(d))}</p>')
        for title, table in subjects:
            parts.append(f"<h4>{e(title)}</h4>")
            parts.append(_html_table(*table))
    for note in d["notes"]:
        parts.append(f'<p class="note">Note: {e(note)}</p>')
    if d.get("restarts_total"):
        parts.append(
            f'<p class="note">Note: {d["restarts_total"]} restart(s) in this group (rounds '
            "retrained after a collapse).</p>"
        )
    return parts


def _maps_section(maps: dict, maps_png: bytes | None, out_dir: Path) -> list[str]:
    e = html.escape
    parts = ["<h2>Uncertainty-map evolution</h2>"]
    if not maps:
        parts.append('<p class="small">No run saved uncertainty maps; section skipped.</p>')
        return parts
    parts.append(
        '<p class="small">Each map: the image, the predicted classes (argmax of the MC mean; '
        "one fixed colour per class, legend under the panel) and the strategy's per-pixel "
        "measure (named above the panel; colour scale from 0, colour bar at its right). "
        "'picked' = the image the strategy chose that round, 'fixed' = one of two pool images "
        "shown every round for comparison. Runs recorded before this legend existed show "
        "unlabelled panels; their measure is named here from the run's strategy.</p>"
    )
    if maps_png:
        parts.append(_b64_img(maps_png, "uncertainty maps across rounds"))
    for ds, sts in maps.items():
        for st, entry in sts.items():
            parts.append(
                f"<h3>{e(ds)} / {e(st)} (seed {e(str(entry['seed']))}): "
                f"{e(entry.get('measure', 'uncertainty'))}</h3>"
            )
            parts.append('<div class="maps">')
            maps_of = [(rnd, Path(f)) for rnd, files in entry["rounds"] for f in files]
            missing = [f for _, f in maps_of if not f.is_file()]
            if missing:  # a sweep's maps/ folders are not committed: say so once
                parts.append(
                    f'<span class="note">{len(missing)} map file(s) not on this disk, e.g. '
                    f"{e(str(missing[0]))} (run folders' maps/ are not committed)</span>"
                )
            for rnd, f in maps_of:
                if f in missing:
                    continue
                role, image_id = map_caption(f)
                caption = f"round {rnd} · {role} · {image_id}" if role else f"round {rnd}"
                # linked, not embedded: a sweep's maps would make the page tens of MB
                src = Path(os.path.relpath(f.resolve(), out_dir.resolve())).as_posix()
                parts.append(
                    f'<figure><a href="{e(src)}"><img src="{e(src)}" alt="{e(caption)}" '
                    f'loading="lazy"></a><figcaption>{e(caption)}</figcaption></figure>'
                )
            parts.append("</div>")
    return parts


def _html(
    summary: dict,
    curves_png: bytes,
    maps: dict,
    maps_png: bytes | None,
    runs: list[dict],
    out_dir: Path = Path("."),
    paired_png: bytes | None = None,
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>axal active-learning report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Active-learning comparison</h1>",
        (
            f'<p class="small">{summary["n_runs"]} run(s); generated '
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Seeds are paired: "
            "a seed gives every strategy the same split, initial labelled set and per-round "
            "initial weights. Runs are grouped by dataset and annotation unit (image or "
            "tile); groups are never mixed in one table.</p>"
        ),
    ]
    for note in summary["notes"]:
        parts.append(f'<p class="note">{e(note)}</p>')
    parts += [
        "<h2>Learning curves</h2>",
        f"<p>{e(figure_note())}</p>",
        _b64_img(curves_png, "learning curves"),
    ]
    if paired_png:
        parts += [
            "<h2>Paired difference from random</h2>",
            f"<p>{e(PAIRED_NOTE)}</p>",
            _b64_img(paired_png, "each strategy's paired difference from random"),
        ]
    for name, d in summary["datasets"].items():
        parts += _group_section(name, d)
    parts += _maps_section(maps, maps_png, out_dir)
    parts.append("<h2>Runs</h2>")
    body = [
        [
            r["dataset"],
            run_unit(r),
            strategy_name(r),
            r["seed"],
            "yes" if r.get("_finished", True) else "NO",
            r.get("_path", ""),
        ]
        for r in sorted(
            runs,
            key=lambda r: (
                str(r["dataset"]),
                run_unit(r),
                strategy_name(r),
                natural_key(r["seed"]),
            ),
        )
    ]
    parts.append(_html_table(["dataset", "unit", "strategy", "seed", "finished", "results"], body))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
