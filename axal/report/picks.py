"""What each strategy picks, in the labels' own terms: myelin, boundaries, crowding.

A learning curve says whether a strategy saves labels, not why. This module reads the picks of
finished runs (every round's ``selected`` units, not the random initial set) and the masks they
cover at the training resolution, and compares them with the pool the run started from:
the share of myelin (and axon) pixels, the share of class-boundary pixels, and how many picks
land in one image. It needs the dataset, so it is a command of its own beside the report:

    python -m axal.report.picks results/runs/tem_tile --out results/tem_tile
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from axal.atomic import atomic_write
from axal.domain import AXON, CLASS_NAMES, MYELIN
from axal.pools import Unit, task_mask
from axal.report.summary import load_runs, strategy_name
from axal.results import is_full_run
from axal.settings import load_samples

FOREGROUND = {c: CLASS_NAMES[c] for c in (MYELIN, AXON)}  # class index -> name


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class: where annotators spend their effort."""
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:] != mask[:-1]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


@dataclass(frozen=True)
class Labels:
    """A dataset's masks with what every run's composition needs, computed once."""

    masks: Mapping[str, np.ndarray]
    edges: Mapping[str, np.ndarray]
    shapes: Mapping[str, tuple[int, ...]]
    n_classes: int

    @classmethod
    def of(cls, masks: Mapping[str, np.ndarray]) -> Labels:
        return cls(
            masks=masks,
            edges={k: boundary(m) for k, m in masks.items()},
            shapes={k: m.shape for k, m in masks.items()},
            n_classes=max(2, 1 + max(int(m.max()) for m in masks.values())),
        )


def composition(units: Iterable[str], labels: Labels) -> dict[str, float]:
    """Class and boundary shares of the pixels inside ``units`` (ids ``image`` or ``image@box``)."""
    counts = np.zeros(labels.n_classes)
    n_edge = 0
    for unit_id in units:
        unit = Unit.parse(unit_id, labels.shapes)
        window = labels.masks[unit.image][unit.slices]
        counts += np.bincount(window.ravel(), minlength=counts.size)[: counts.size]
        n_edge += int(labels.edges[unit.image][unit.slices].sum())
    total = max(1.0, counts.sum())
    out = {name: counts[c] / total for c, name in FOREGROUND.items() if c < counts.size}
    out["boundary"] = n_edge / total
    out["pixels"] = float(counts.sum())
    return out


def _labels(config: Mapping, cache: dict) -> Labels:
    """The run's masks at its training resolution, loaded once per dataset setting."""
    cfg = OmegaConf.create(dict(config))
    key = json.dumps([OmegaConf.to_container(cfg.dataset), str(cfg.task)], sort_keys=True)
    if key not in cache:
        samples = [s for s in load_samples(cfg) if s.mask is not None]
        cache[key] = Labels.of({s.id: task_mask(s.mask, str(cfg.task)) for s in samples})
    return cache[key]


def run_picks(run: Mapping, cache: dict) -> dict[str, Any]:
    """One run's picks against its starting pool."""
    labels = _labels(run["config"], cache)
    picked = [u for r in run["rounds"] for u in (r.get("selected") or [])]
    per_image: dict[str, int] = defaultdict(int)
    for unit_id in picked:
        per_image[Unit.parse(unit_id, labels.shapes).image] += 1
    return {
        "seed": int(run["seed"]),
        "n_picked": len(picked),
        "picked": composition(picked, labels),
        "pool": composition(run["splits"]["pool"], labels),
        "images": len(per_image),
        "most_in_one_image": max(per_image.values(), default=0),
    }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize_picks(runs: Iterable[Mapping], cache: dict | None = None) -> dict[str, Any]:
    """Per (dataset/unit, strategy): mean over seeds of each run's pick composition."""
    cache = {} if cache is None else cache
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if is_full_run(run) or not run.get("finished"):
            continue
        key = f"{run['dataset']}/{run.get('unit', 'image')}"
        groups[key][strategy_name(run)].append(run_picks(run, cache))
    out: dict[str, Any] = {}
    for key, strategies in groups.items():
        out[key] = {}
        for name, per_run in sorted(strategies.items()):
            shares = {}
            for part in ("picked", "pool"):
                fields = per_run[0][part].keys() - {"pixels"}
                shares[part] = {f: _mean([r[part][f] for r in per_run]) for f in sorted(fields)}
            out[key][name] = {
                "n_runs": len(per_run),
                "seeds": sorted(r["seed"] for r in per_run),
                **shares,
                "n_picked": _mean([r["n_picked"] for r in per_run]),
                "images": _mean([r["images"] for r in per_run]),
                "most_in_one_image": _mean([r["most_in_one_image"] for r in per_run]),
            }
    return out


def picks_table(summary: Mapping[str, Any]) -> str:
    """Markdown: one table per group, one row per strategy; every column defined below it."""
    lines = ["# What the strategies pick", ""]
    for key, strategies in summary.items():
        first = next(iter(strategies.values()))
        classes = [c for c in FOREGROUND.values() if c in first["picked"]]
        head = ["strategy", "runs"]
        for c in [*classes, "boundary"]:
            head += [f"{c}, picked", f"{c}, pool"]
        head += ["picks", "images touched", "most picks in one image"]
        lines += [f"## {key}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, s in strategies.items():
            row = [name, str(s["n_runs"])]
            for c in [*classes, "boundary"]:
                row += [f"{s['picked'][c]:.3f}", f"{s['pool'][c]:.3f}"]
            row += [f"{s['n_picked']:.0f}", f"{s['images']:.1f}", f"{s['most_in_one_image']:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "Means over the runs (seeds) of each strategy. *picked*: the share of the pixels inside "
        "the units a strategy picked in all its rounds (not the random initial units) that "
        "belong to the class; *pool*: the same share over the pool the run started from (it "
        "differs between seeds because the test subjects differ). *boundary*: pixels with a "
        "4-neighbour of another class. *images touched*: training images with at least one "
        "pick; *most picks in one image*: the largest number of picks in a single image.",
        "",
    ]
    return "\n".join(lines)


def write_picks(paths: Iterable[str | Path], out_dir: str | Path) -> Path:
    """Write ``picks.md`` and ``picks.json`` for the runs under ``paths``; returns the .md."""
    summary = summarize_picks(load_runs(paths))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "picks.json", json.dumps(summary, indent=2))
    md = out / "picks.md"
    atomic_write(md, picks_table(summary))
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="run folders or results.json files")
    p.add_argument("--out", required=True, help="folder for picks.md and picks.json")
    args = p.parse_args(argv)
    print(f"picks: {write_picks(args.paths, args.out)}")


if __name__ == "__main__":
    main()
