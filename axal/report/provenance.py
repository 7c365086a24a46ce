"""Where a study's runs came from: the machines they ran on, and the round 0 they shared.

The same config, seed and thread count train to other floats under another processor's
kernels (``benchmarks/training.py --isa``, docs/engine.md). A seed whose arms ran on two
machines is still paired on its split, picks' draws and training seeds, but not on its
floats, so the report names such seeds rather than leaving a reader to find them. Likewise a
seed's arms share one round 0 through the round-0 cache; when that entry was trained more than
once to other weights, those arms are not paired on it, and the report says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import PurePath
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


def round_0_apart(
    runs: list[Mapping[str, Any]], arm: Callable[[Mapping[str, Any]], str]
) -> dict[str, list[dict[str, Any]]]:
    """Per seed, the shared round-0 entries that several arms each trained, to other weights.

    The cache (``al.first_round_cache``) is not committed, so an entry lost with a machine is
    trained again by the next arm that needs it: bit for bit the same on one machine, not on
    another (seed 18 of ``tem_tile_axonmyelin``: test Dice 0.704 and 0.678). Judged by the
    round-0 test Dice each training arm recorded; arms that loaded the entry are not listed.
    ``arm`` names a run as the report does (the caller's, so there is one naming rule).
    """
    trained: dict[tuple[str, str], dict[str, float]] = {}
    for run in runs:
        first = next((r for r in run.get("rounds") or [] if r.get("round") == 0), {})
        shared = first.get("shared_first_round") or {}
        dice = (first.get("test") or {}).get("dice")
        if shared.get("trained_here") and shared.get("entry") and dice is not None:
            key = (str(run.get("seed")), PurePath(str(shared["entry"])).name)
            trained.setdefault(key, {})[arm(run)] = float(dice)
    apart: dict[str, list[dict[str, Any]]] = {}
    for (seed, entry), by_arm in sorted(trained.items(), key=lambda kv: natural_key(kv[0][0])):
        if len(set(by_arm.values())) > 1:
            apart.setdefault(seed, []).append(
                {"entry": entry, "test_dice": dict(sorted(by_arm.items()))}
            )
    return apart


def round_0_notes(apart: Mapping[str, list[Mapping[str, Any]]]) -> list[str]:
    """The report's note on seeds whose arms trained their shared round 0 apart."""
    if not apart:
        return []
    told = "; ".join(
        f"{seed} (" + ", ".join(f"{arm} {dice:.3f}" for arm, dice in e["test_dice"].items()) + ")"
        for seed, entries in apart.items()
        for e in entries
    )
    return [
        f"round 0 trained apart on seed(s) {told}: arms meant to share one round 0 each trained "
        "it, to other weights (round-0 test Dice per arm), so they are not paired on it"
    ]
