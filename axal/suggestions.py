"""What an annotator reads after a round: ``suggestions.csv`` and the ``annotate.html`` page.

The page shows the latest suggestions, best first, each with its overlay (the image, the
model's uncertainty, the box to label), its score, the predicted mask to start from and the
file to save the corrected mask as; then the rounds so far. It links files of the work folder
by relative paths, so the folder can be moved or shared as a whole.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

from axal.atomic import atomic_write

CSV_COLUMNS = ("rank", "image", "x", "y", "width", "height", "score", "strategy")


def write_suggestions_csv(path: Path, suggestions: list[dict[str, Any]]) -> None:
    """One row per suggestion; the box is in the image file's pixels (whole image: all of it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in suggestions:
        score = row.get("score")
        values = {**row, "score": "" if score is None else f"{score:.6g}"}
        writer.writerow([values[c] for c in CSV_COLUMNS])
    atomic_write(path, buf.getvalue())


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em 2em; color: #222; max-width: 1150px; }
h1 { font-size: 1.35em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
.meta { color: #555; font-size: 0.9em; } code { background: #f3f3f3; padding: 0 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 14px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; width: 252px; }
.card img { width: 252px; display: block; } .card p { margin: 3px 0; font-size: 0.8em; }
.card code { word-break: break-all; }
.rank { font-weight: 600; font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
ol { padding-left: 1.3em; } li { margin: 2px 0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _card(row: dict[str, Any], record: dict[str, Any]) -> str:
    score = "—" if row.get("score") is None else f"{row['score']:.4g}"
    files = record.get("predictions", {}).get(row["image"], [])
    start = next((f for f in files if f.endswith("_seg-axonmyelin.png")), None)
    figure = next(
        (m for m in record.get("uncertainty_maps", []) if m.endswith(f"_{row['image']}.png")), None
    )
    overlay = row.get("overlay")
    picture = f'<img src="{_e(overlay)}" alt="overlay of {_e(row["image"])}">' if overlay else ""
    start_link = f'<a href="{_e(start)}">{_e(Path(start).name)}</a>' if start else "—"
    if row.get("has_mask"):  # starting from the prediction would replace earlier labels
        start_link = (
            f"<b>your own mask</b> <code>{_e(row['mask'])}</code>: this image already holds "
            "labelled tiles. Edit that file inside this box only, not the prediction; the tiles "
            "labelled before must stay as they are (axal checks them next round and warns, "
            "naming any that changed)"
        )
    figure_link = f' · <a href="{_e(figure)}">prediction and uncertainty</a>' if figure else ""
    n_fibers = row.get("predicted_fibers")
    fibers = "" if n_fibers is None else f" · {n_fibers} predicted fibers to check"
    return (
        f'<div class="card">{picture}'
        f'<p><span class="rank">#{row["rank"]}</span> <b>{_e(row["image"])}</b></p>'
        f"<p>box x {row['x']}, y {row['y']}, {row['width']} x {row['height']} px · score "
        f"{score} ({_e(row['strategy'])}){fibers}{figure_link}</p>"
        f"<p>start from: {start_link}</p>"
        f"<p>save the corrected mask as: <code>{_e(row['mask'])}</code></p></div>"
    )


def write_page(path: Path, state: dict[str, Any]) -> None:
    """annotate.html: the latest round's suggestions, then every round's summary."""
    rounds = state.get("rounds", [])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>axal annotate: {_e(state.get('root', ''))}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>What to annotate next</h1><p class='meta'>{_e(state.get('root', ''))} · "
        f"task {_e(state.get('task'))} · unit {_e(state.get('unit'))}</p>",
    ]
    if not rounds:
        parts.append(_first_picks_html(state.get("first_picks")) + "</body></html>")
        atomic_write(path, "".join(parts))
        return
    last = rounds[-1]
    n_images = len(last.get("labelled_images", []))
    n_pred = len(last.get("predictions", {}))
    tuned = last.get("fine_tuned_from")
    parts.append(
        f"<p>Round {last['round']} ({_e(last.get('time', ''))}): a model trained on "
        f"{n_images} labelled images ({last['steps']} steps"
        f"{', fine-tuned from ' + _e(tuned) if tuned else ''}, {last['restarts']} restarts) "
        f"scored the {n_pred} images not yet labelled with <b>{_e(last.get('strategy'))}</b>. "
        f"Model: <code>{_e(last['checkpoint'])}</code></p>"
    )
    how = how_picked(last)
    if how:
        parts.append(f"<p class='how'>{_e(how)}</p>")
    suggestions = last.get("suggestions", [])
    if suggestions:
        parts.append(
            "<h2>Suggestions</h2><ol><li>Open each suggestion's predicted mask (AxonDeepSeg "
            "values: 0 background, 127 myelin, 255 axon) in your annotation tool and correct "
            + ("it inside the box" if state.get("unit") == "tile" else "it")
            + ".</li><li>Save it under the name shown; only the suggested boxes count when "
            "annotating tiles.</li><li>Run the same <code>annotate.py</code> command again: "
            "it trains on the new masks and suggests the next ones.</li></ol>"
        )
        cards = [_card(row, last) for row in suggestions]
        parts.append(f"<div class='cards'>{''.join(cards)}</div>")
        scale = next((row["overlay_scale"] for row in suggestions if row.get("overlay_scale")), 0)
        if scale:
            parts.append(
                "<p class='meta'>The overlays share one colour scale, from 0 (dark: the model is "
                f"sure) to {scale[1]:.4g} (bright; the round's largest value), on the colour bar "
                "beside each: a colour is the same uncertainty on every suggestion.</p>"
            )
    else:
        parts.append("<p>Every image is labelled: nothing left to suggest.</p>")
    where = (
        "beside each image (<code>&lt;stem&gt;_seg-axonmyelin.png</code>)"
        if last.get("predictions_beside_images")
        else "<a href='predictions/'>predictions/</a>"
    )
    parts.append(
        f"<p>Predicted masks of all {n_pred} unlabelled images: {where} · suggestions as CSV: "
        "<a href='suggestions.csv'>suggestions.csv</a> · record: "
        "<a href='rounds.json'>rounds.json</a></p>"
    )
    rows = "".join(
        f"<tr><td>{r['round']}</td><td>{_e(r.get('time', ''))}</td>"
        f"<td>{len(r.get('labelled_images', []))}</td><td>{len(r.get('new_masks', []))}</td>"
        f"<td>{r['steps']}</td><td>{_number(r.get('train_loss'))}</td>"
        f"<td>{_e(', '.join(s['unit'] for s in r.get('suggestions', [])))}</td></tr>"
        for r in rounds
    )
    parts.append(
        "<h2>Rounds</h2><table><tr><th>round</th><th>time</th><th>labelled images</th>"
        "<th>new masks</th><th>steps</th><th>train loss</th><th>suggested</th></tr>"
        f"{rows}</table></body></html>"
    )
    atomic_write(path, "".join(parts))


def latest_suggestions(state: dict[str, Any]) -> list[dict[str, Any]]:
    """What to annotate now: the last round's suggestions, or before any round the label-free
    first picks (``al.initial_pick=typical``)."""
    rounds = state.get("rounds") or []
    if rounds:
        return rounds[-1].get("suggestions", [])
    return (state.get("first_picks") or {}).get("suggestions", [])


def _first_picks_html(record: dict[str, Any] | None) -> str:
    if not record:
        return "<p>No round yet.</p>"
    cards = "".join(_card(row, {}) for row in record["suggestions"])
    return (
        f"<p>No model yet ({_e(record.get('time', ''))}): round 0 needs {record['needed']} "
        "images with a mask (al.initial). These are the first picks, chosen without any "
        "label: TypiClust grouped the images' units by the features of the untrained network "
        "(seeded like round 0) and took the most typical unit of each of the largest groups, "
        "so the first masks cover the kinds of tissue the folder holds rather than its "
        "outliers. Ranks are the order of picking, not a score.</p>"
        "<h2>First picks</h2><ol><li>Annotate each image (AxonDeepSeg values: 0 background, "
        "127 myelin, 255 axon), from scratch or from another model's prediction; with tiles, "
        "only the box counts.</li><li>Save it under the name shown.</li><li>Run the same "
        "<code>annotate.py</code> command again: round 0 trains on the masks and suggests "
        f"the next ones.</li></ol><div class='cards'>{cards}</div>"
        "<p class='meta'>suggestions as CSV: <a href='suggestions.csv'>suggestions.csv</a> · "
        "record: <a href='rounds.json'>rounds.json</a></p>"
    )


def how_picked(record: dict) -> str:
    """What the strategy did, in words: ranks are the order of picking, not of the scores."""
    strategy = (record.get("config") or {}).get("strategy") or {}
    text = _how_picked(record, strategy)
    if text and strategy.get("stratify") == "subject":
        text += " The picks take turns between subjects (strategy.stratify=subject)."
    return text


def _how_picked(record: dict, strategy: dict) -> str:
    k = len(record.get("suggestions", []))
    pool = len(record.get("scores") or {})
    if not k:
        return ""
    target = str(strategy.get("_target_", ""))
    if target.endswith(".Schedule"):
        after = int(strategy.get("switch_after", 0))
        part = "first" if int(record.get("round", 0)) < after else "then"
        return _how_picked(record, strategy.get(part) or {}) + (
            f" (round {record.get('round', 0)}: the schedule picks by {part!r} before round "
            f"{after}, by 'then' from it on)"
        )
    if target.endswith(".TypiClust"):
        return (
            f"How these were picked: the most typical unit (the densest among similar ones, by "
            f"the model's features) of each of the {k} largest groups of similar units that hold "
            "no labelled unit; no label and no uncertainty is used. Ranks are the order of "
            "picking (the largest group first), not a score."
        )
    if target.endswith(".RandomForeground"):
        return (
            f"How these were picked: {k} of the {pool} pool units at random, a unit the model "
            "predicts more foreground in being likelier to be drawn."
        )
    if target.endswith(".ClaSP"):
        return (
            f"How these were picked: {k} of the {pool} pool units, taking turns between the "
            "predicted classes; within a class a unit with more uncertain pixels of that class "
            "is likelier to be drawn, and the draw comes closer to the most uncertain ones each "
            "round."
        )
    if target.endswith(".Hybrid"):
        pre = strategy.get("prefilter")
        if pre is None:
            n = 3 * k
        elif isinstance(pre, float):
            n = max(k, round(pre * pool))
        else:
            n = int(pre)
        n = min(n, pool) if pool else n
        return (
            f"How these were picked: the {n} most uncertain of the {pool} pool units by "
            f"{strategy.get('base', 'the base measure')}, then the {k} most different of those "
            "(k-center greedy on the model's features); ranks are the order of picking, so a "
            "lower-scored unit can rank above a higher-scored one."
            + (
                " With so few candidates per pick this is mostly diversity sampling."
                if n <= k + 1 or pool <= 4 * k
                else ""
            )
        )
    if record.get("strategy") == "random":
        return f"How these were picked: {k} of the {pool} pool units at random."
    return f"How these were picked: the {k} highest-scoring of the {pool} pool units, best first."
