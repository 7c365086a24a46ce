"""The convergence study: how many optimizer steps a round needs before strategies are compared.

A comparison of under-trained models measures the training noise, not the strategies. This
module reads the study's runs (``conf/experiment/convergence_*.yaml``: the full-data reference
at several step counts; ``finetune_tem*``: fine-tuning against retraining each round) and
writes its tables. The rule: per recipe variant, the chosen step count is the smallest whose
mean test Dice is within ``tolerance`` (0.5 Dice points) of the largest count's.

    python -m axal.convergence results/runs/convergence --out results/convergence
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axal.atomic import atomic_write

TOLERANCE = 0.005  # 0.5 Dice points


def _get(cfg: Mapping, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def variant(run: Mapping) -> tuple:
    """What besides the step count defines a recipe: dataset, lr, batch, patch size."""
    cfg = run.get("config", {})
    return (
        run["dataset"],
        float(_get(cfg, "model.module.lr", float("nan"))),
        int(_get(cfg, "dataset.batch_size", 0)),
        int(_get(cfg, "dataset.patch_size", 0)),
    )


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()) if v.size else math.nan,
        "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "n": int(v.size),
    }


def step_table(runs: Iterable[Mapping], tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """One row per (variant, steps) of the full-data runs, with the rule's verdict per variant."""
    groups: dict[tuple, dict[int, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.get("strategy") != "full" or not run.get("rounds"):
            continue
        steps = int(run["rounds"][0].get("steps") or _get(run.get("config", {}), "trainer.steps"))
        groups[variant(run)][steps].append(run)
    rows = []
    for var in sorted(groups):
        by_steps = groups[var]
        largest = max(by_steps)
        ref = _stats([r["rounds"][0]["test"]["dice"] for r in by_steps[largest]])["mean"]
        chosen = min(
            s
            for s, rs in by_steps.items()
            if _stats([r["rounds"][0]["test"]["dice"] for r in rs])["mean"] >= ref - tolerance
        )
        for steps in sorted(by_steps):
            rs = by_steps[steps]
            rounds = [r["rounds"][0] for r in rs]
            dice = _stats([r["test"]["dice"] for r in rounds])
            rows.append(
                {
                    "dataset": var[0],
                    "lr": var[1],
                    "batch": var[2],
                    "patch": var[3],
                    "steps": steps,
                    "dice_mean": dice["mean"],
                    "dice_sd": dice["sd"],
                    "n_seeds": dice["n"],
                    "seeds": sorted(r["seed"] for r in rs),
                    "precision_mean": _stats([r["test"]["precision"] for r in rounds])["mean"],
                    "sensitivity_mean": _stats([r["test"]["sensitivity"] for r in rounds])["mean"],
                    "restarts": int(sum(r.get("restarts", 0) for r in rounds)),
                    "train_seconds_mean": _stats([r["train_seconds"] for r in rounds])["mean"],
                    "gap_to_largest": ref - dice["mean"],
                    "chosen": steps == chosen,
                }
            )
    return rows


def finetune_table(runs: Iterable[Mapping]) -> list[dict[str, Any]]:
    """Mean Dice per round of each fine-tuning budget and of retraining, paired by seed.

    Every run that is not a full-data reference belongs to the fine-tuning study.
    """
    arms: dict[str, dict[int, Mapping]] = defaultdict(dict)
    for run in runs:
        cfg = run.get("config", {})
        if run.get("strategy") == "full":
            continue
        if _get(cfg, "al.reinit", True):
            arm = "retrain"
        else:
            arm = f"finetune {_get(cfg, 'trainer.finetune_steps')}"
        arms[arm][run["seed"]] = run
    if "retrain" not in arms:
        return []
    rows = []
    base = arms["retrain"]
    for arm in sorted(arms, key=lambda a: (a != "retrain", len(a), a)):
        per_seed = arms[arm]
        seeds = sorted(set(per_seed) & set(base))
        n_rounds = min(len(per_seed[s]["rounds"]) for s in seeds) if seeds else 0
        for r in range(n_rounds):
            dice = [per_seed[s]["rounds"][r]["test"]["dice"] for s in seeds]
            diff = [d - base[s]["rounds"][r]["test"]["dice"] for d, s in zip(dice, seeds)]
            rows.append(
                {
                    "arm": arm,
                    "round": r,
                    "n_labelled": per_seed[seeds[0]]["rounds"][r]["n_labelled"],
                    "steps": per_seed[seeds[0]]["rounds"][r].get("steps"),
                    "dice_mean": _stats(dice)["mean"],
                    "diff_vs_retrain_mean": _stats(diff)["mean"],
                    "diff_vs_retrain_sd": _stats(diff)["sd"],
                    "n_seeds": len(seeds),
                    "train_seconds_mean": _stats(
                        [per_seed[s]["rounds"][r]["train_seconds"] for s in seeds]
                    )["mean"],
                }
            )
    return rows


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(steps: list[dict], finetune: list[dict], tolerance: float = TOLERANCE) -> str:
    lines = [
        "## Steps per round (full-data reference; mean ± SD over seeds = test folds)",
        "",
        f"Chosen (**bold**): the smallest step count within {tolerance * 100:.1f} Dice points "
        "of the largest one, per dataset / lr / batch / patch.",
        "",
        "| dataset | lr | batch | patch | steps | Dice | gap to largest | precision | "
        "sensitivity | restarts | train s | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in steps:
        mark = "**" if r["chosen"] else ""
        lines.append(
            f"| {r['dataset']} | {r['lr']:g} | {r['batch']} | {r['patch']} | "
            f"{mark}{r['steps']}{mark} | {_f(r['dice_mean'])} ± {_f(r['dice_sd'])} | "
            f"{_f(r['gap_to_largest'])} | {_f(r['precision_mean'])} | "
            f"{_f(r['sensitivity_mean'])} | {r['restarts']} | "
            f"{_f(r['train_seconds_mean'], 1)} | {r['n_seeds']} |"
        )
    if finetune:
        lines += [
            "",
            "## Fine-tuning (al.reinit=false) against retraining each round",
            "",
            "Dice difference to retraining from scratch, paired by seed (same picks: random).",
            "",
            "| arm | round | labelled | steps | Dice | Δ vs retrain (mean ± SD) | train s "
            "| seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in finetune:
            lines.append(
                f"| {r['arm']} | {r['round']} | {r['n_labelled']} | {r['steps']} | "
                f"{_f(r['dice_mean'])} | {_f(r['diff_vs_retrain_mean'])} ± "
                f"{_f(r['diff_vs_retrain_sd'])} | {_f(r['train_seconds_mean'], 1)} | "
                f"{r['n_seeds']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from axal.report import load_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/convergence"))
    args = parser.parse_args(argv)
    runs = [r for r in load_runs(args.dirs) if r.get("_finished")]
    steps, finetune = step_table(runs), finetune_table(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(steps, finetune)
    atomic_write(args.out / "table.md", text)
    atomic_write(
        args.out / "summary.json",
        json.dumps({"steps": steps, "finetune": finetune}, indent=1) + "\n",
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
