"""The machines a study's runs ran on, from the ``environment`` each run records.

The same config, seed and thread count train to other floats under another processor's
kernels (``benchmarks/training.py --isa``, docs/engine.md). A seed whose arms ran on two
machines is still paired on its split, picks' draws and training seeds, but not on its
floats, so the report names such seeds rather than leaving a reader to find them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from axal.report.ordering import natural_key


def machine_label(env: Mapping[str, Any]) -> str:
    """One machine's name in the report: the device, the kernel set and torch.

    A CPU run names the processor and the instruction set its kernels ran on
    (``cpu_capability``; for runs recorded before that field, what their ``cpu_features``
    give torch), and any cap on it (``isa_settings``).
    """
    torch = env.get("torch", "?")
    device = env.get("device") or "cpu"
    if device != "cpu":
        return f"{device}, torch {torch}"
    features = env.get("cpu_features") or []
    capability = env.get("cpu_capability") or (
        "AVX512" if "avx512f" in features else "AVX2" if "avx2" in features else "?"
    )
    label = f"{env.get('cpu') or 'unknown processor'}, {capability} kernels, torch {torch}"
    caps = env.get("isa_settings") or {}
    if caps:
        label += ", " + ", ".join(f"{k}={v}" for k, v in sorted(caps.items()))
    return label


def run_machines(run: Mapping[str, Any]) -> list[str]:
    """The machines that trained a run, in order: where it started, then each resume's
    (a machine listed once); empty when the run recorded none."""
    envs = [run.get("environment")] + [r.get("environment") for r in run.get("resumes") or []]
    labels: list[str] = []
    for env in envs:
        if isinstance(env, Mapping) and (label := machine_label(env)) not in labels:
            labels.append(label)
    return labels


def machines(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per machine, how many runs it trained; the runs that recorded none; the seeds whose
    runs (every arm and the reference) ran on more than one machine."""
    per_run = [(run, run_machines(run)) for run in runs]
    count = Counter(label for _, labels in per_run for label in labels)
    by_seed: dict[str, set[str]] = {}
    for run, labels in per_run:
        by_seed.setdefault(str(run.get("seed")), set()).update(labels)
    mixed = {seed: sorted(labels) for seed, labels in by_seed.items() if len(labels) > 1}
    return {
        "runs": dict(sorted(count.items())),
        "not_recorded": sum(not labels for _, labels in per_run),
        "mixed_seeds": dict(sorted(mixed.items(), key=lambda kv: natural_key(kv[0]))),
    }


def machine_notes(block: Mapping[str, Any]) -> list[str]:
    """The report's notes on a group's machines: none while every recorded run shares one."""
    if len(block["runs"]) < 2:
        return []
    listed = "; ".join(f"{label} ({n})" for label, n in block["runs"].items())
    unknown = block["not_recorded"]
    notes = [
        f"runs trained on {len(block['runs'])} machines: {listed}"
        + (f"; {unknown} run(s) recorded no machine" if unknown else "")
    ]
    if block["mixed_seeds"]:
        seeds = ", ".join(block["mixed_seeds"])
        notes.append(
            f"seed(s) {seeds}: runs of one seed trained on more than one machine, so their "
            "pairs share the split and the draws but not the processor's floats"
        )
    return notes
