"""Tests for axal.report on synthetic results.json files whose numbers are known by hand."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from axal import report
from axal.report import (
    SUMMARY_COLUMNS,
    acquire_seconds,
    area_under_curve,
    bootstrap_ratio_ci,
    holm,
    labels_to_reach,
    learning_curve,
    load_runs,
    paired_wilcoxon,
    summarize,
    write_report,
)

SEEDS = [0, 1, 2, 3, 4]
INITIAL = 3
POOL = 12  # whole training pool = 15 images
STEP = 3


# ------------------------------------------------------------------------------------------
# Fixture helpers: curves known in closed form
# ------------------------------------------------------------------------------------------
def random_dice(n: int, seed: int) -> float:
    """Linear: 0.5 + 0.02 (n - 3), shifted by 0.001 per seed."""
    return 0.5 + 0.02 * (n - 3) + 0.001 * seed


def uncertainty_dice(n: int, seed: int) -> float:
    """Steeper and concave; at n=6 seeds 3 and 4 already cross 95% of full-data Dice."""
    base = {3: 0.5, 6: 0.65 + 0.02 * seed, 9: 0.72, 12: 0.75, 15: 0.76}[n]
    return base + 0.002 * seed


def bald_dice(n: int, seed: int) -> float:
    """Around random but stops at n=12 without reaching 95%: its labels-to-95 are censored."""
    return random_dice(n, seed) + (0.004 if seed % 2 else -0.003)


def make_run(dataset, strategy, seed, dice_fn, n_max, *, label=None, finished=True):
    ids = [f"{dataset}_{i}" for i in range(100)]
    splits = {
        "test": ids[90:95],
        "val": ids[95:100],
        "initial": ids[:INITIAL],
        "pool": ids[INITIAL : INITIAL + POOL],
    }
    rounds = []
    budgets = list(range(INITIAL, n_max + 1, STEP))
    for r, n in enumerate(budgets):
        is_last = n == budgets[-1]
        exhausted = n == INITIAL + POOL
        d = dice_fn(n, seed)
        rounds.append(
            {
                "round": r,
                "n_labelled": n,
                "labelled": ids[:n],
                "selected": [] if (is_last and exhausted) else ids[n : n + STEP],
                "scores": {i: 0.1 for i in ids[n : INITIAL + POOL]},
                "test": {"dice": d, "dice_myelin": d, "dice_axon": None, "iou": d / (2 - d)},
                "train_seconds": 1.0,
                "acquire_seconds": 0.1,
            }
        )
    run = {
        "dataset": dataset,
        "task": "myelin",
        "strategy": strategy,
        "seed": seed,
        "splits": splits,
        "rounds": rounds,
        "finished": finished,
    }
    if label:
        run["label"] = label
    return run


def write_run(root: Path, run: dict) -> Path:
    folder = root / run["dataset"] / (run.get("label") or run["strategy"]) / f"seed{run['seed']}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(run))
    return path


def build_runs(root: Path, *, random_exhausts: bool = True, maps: bool = False) -> Path:
    """Write the standard sweep: random, uncertainty and bald+power, 5 seeds, one dataset."""
    for seed in SEEDS:
        write_run(root, make_run("tem", "random", seed, random_dice, 15 if random_exhausts else 12))
        unc = make_run("tem", "uncertainty", seed, uncertainty_dice, 12)
        if maps:
            from matplotlib.image import imsave

            folder = root / "tem" / "uncertainty" / f"seed{seed}"
            (folder / "maps").mkdir(parents=True, exist_ok=True)
            unc["uncertainty_maps"] = {}
            for r in range(len(unc["rounds"])):
                rel = f"maps/round{r}.png"
                imsave(folder / rel, np.random.default_rng(r).random((8, 8)))
                unc["uncertainty_maps"][str(r)] = [rel]
        write_run(root, unc)
        write_run(root, make_run("tem", "bald", seed, bald_dice, 12, label="bald+power"))
    return root


def trapezoid_mean(values: list[float], step: float = STEP) -> float:
    """Hand-written normalised trapezoid for equally spaced points."""
    area = sum(step * (a + b) / 2 for a, b in itertools.pairwise(values))
    return area / (step * (len(values) - 1))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = build_runs(tmp_path_factory.mktemp("runs"))
    return root, summarize(load_runs([root]))


# ------------------------------------------------------------------------------------------
# Curve metrics
# ------------------------------------------------------------------------------------------
def test_area_under_curve_exact_values():
    assert area_under_curve([0, 10], [0.7, 0.7]) == pytest.approx(0.7)
    # linear curve: normalised ALC equals the value at the range midpoint
    n = np.array([3, 6, 9, 12, 15])
    assert area_under_curve(n, 0.5 + 0.02 * (n - 3)) == pytest.approx(0.62)
    assert area_under_curve(n, 0.5 + 0.02 * (n - 3), 3, 12) == pytest.approx(0.59)
    # interpolated range ends: y = x/10 on [2, 4] has mean 0.3
    assert area_under_curve([0, 10], [0.0, 1.0], 2, 4) == pytest.approx(0.3)
    # unsorted input, degenerate range, empty curve
    assert area_under_curve([6, 3], [0.8, 0.6]) == pytest.approx(0.7)
    assert area_under_curve([3, 6], [0.6, 0.8], 6, 6) == pytest.approx(0.8)
    assert math.isnan(area_under_curve([], []))
    with pytest.raises(ValueError):
        area_under_curve([3, 6], [0.6, 0.8], 3, 9)


def test_labels_to_reach():
    n = [3, 6, 9, 12]
    d = [0.5, 0.7, 0.65, 0.8]
    assert labels_to_reach(n, d, 0.7) == 6  # equality counts, first crossing wins
    assert labels_to_reach(n, d, 0.75) == 12
    assert labels_to_reach(n, d, 0.4) == 3
    assert math.isnan(labels_to_reach(n, d, 0.81))
    assert math.isnan(labels_to_reach(n, d, float("nan")))
    assert labels_to_reach([12, 3], [0.9, 0.9], 0.9) == 3


def test_learning_curve_sorted_and_skips_missing_dice():
    run = {
        "rounds": [
            {"n_labelled": 9, "test": {"dice": 0.7}},
            {"n_labelled": 3, "test": {"dice": 0.5}},
            {"n_labelled": 6, "test": {"dice": None}},
            {"n_labelled": 12},
        ]
    }
    n, d = learning_curve(run)
    np.testing.assert_array_equal(n, [3, 9])
    np.testing.assert_array_equal(d, [0.5, 0.7])


# ------------------------------------------------------------------------------------------
# Statistics helpers
# ------------------------------------------------------------------------------------------
def test_holm_known_values():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(holm([0.9, 0.6]), [1.0, 1.0])  # capped at 1
    out = holm([0.01, float("nan"), 0.04])  # nan is not a test: m = 2
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])
    assert math.isnan(out[1])
    assert holm([]).size == 0


def test_wilcoxon_degenerate_cases():
    p, note = paired_wilcoxon([0.5], [0.4])
    assert math.isnan(p) and "1 paired seed" in note
    p, note = paired_wilcoxon([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert math.isnan(p) and "zero" in note


def test_bootstrap_ratio_ci():
    rng = np.random.default_rng(1)
    denom = rng.uniform(20, 30, size=8)
    numer = denom * 0.6 + rng.normal(0, 1, size=8)
    lo, hi = bootstrap_ratio_ci(numer, denom)
    true = numer.mean() / denom.mean()
    assert lo <= true <= hi < 1
    assert bootstrap_ratio_ci(numer, denom) == (lo, hi)  # seeded: reproducible
    assert all(math.isnan(v) for v in bootstrap_ratio_ci([1.0], [2.0]))
    # three seeds have ten distinct resamples: no interval is claimed from them
    assert all(math.isnan(v) for v in bootstrap_ratio_ci(numer[:3], denom[:3]))
    assert all(math.isfinite(v) for v in bootstrap_ratio_ci(numer[:5], denom[:5]))


# ------------------------------------------------------------------------------------------
# Summary on the synthetic sweep
# ------------------------------------------------------------------------------------------
def test_loading_labels_and_grouping(sweep):
    root, summary = sweep
    runs = load_runs([root])
    assert len(runs) == 15
    assert all(r["_path"].endswith("results.json") for r in runs)
    tem = summary["datasets"]["tem"]
    assert list(tem["strategies"]) == ["random", "bald+power", "uncertainty"]
    assert all(s["n_seeds"] == 5 for s in tem["strategies"].values())
    assert tem["alc_range"] == [3, 12]  # common budget range of the group
    assert tem["full_data"]["source"] == "full_pool"
    assert tem["full_data"]["note"] is None
    # single-file paths work too and are not duplicated
    one = root / "tem" / "random" / "seed0" / "results.json"
    assert len(load_runs([one, one, root / "tem" / "random"])) == 5


def test_alc_exact(sweep):
    _, summary = sweep
    st = summary["datasets"]["tem"]["strategies"]
    for seed in SEEDS:
        # random is linear: mean over [3, 12] = value at 7.5
        assert st["random"]["alc"]["per_seed"][str(seed)] == pytest.approx(0.59 + 0.001 * seed)
        expected = trapezoid_mean([uncertainty_dice(n, seed) for n in (3, 6, 9, 12)])
        assert st["uncertainty"]["alc"]["per_seed"][str(seed)] == pytest.approx(expected)
    assert st["uncertainty"]["alc"]["per_seed"]["0"] == pytest.approx(0.665)
    assert st["random"]["alc"]["mean"] == pytest.approx(0.592)
    assert st["random"]["alc"]["std"] == pytest.approx(np.std([0.001 * s for s in SEEDS], ddof=1))


def test_labels_to_reach_and_saving(sweep):
    _, summary = sweep
    tem = summary["datasets"]["tem"]
    st = tem["strategies"]
    for seed in SEEDS:
        # full-data Dice = random's Dice after labelling the whole pool (n=15)
        assert tem["full_data"]["per_seed"][str(seed)] == pytest.approx(random_dice(15, seed))
    # 95% target 0.703 + 0.00095 s: random first reaches it at 15, uncertainty at 9 (6 for s>=3)
    assert st["random"]["labels_to_95"]["per_seed"] == {str(s): 15 for s in SEEDS}
    assert st["uncertainty"]["labels_to_95"]["per_seed"] == {
        "0": 9, "1": 9, "2": 9, "3": 6, "4": 6,
    }  # fmt: skip
    assert st["uncertainty"]["labels_to_95"]["mean"] == pytest.approx(7.8)
    assert st["uncertainty"]["saving_95"] == pytest.approx(1 - 7.8 / 15)
    assert st["uncertainty"]["stats"]["ratio"] == pytest.approx(7.8 / 15)
    # bald+power never reaches 95% within its 12 labels: censored at 12 + 1
    bald = st["bald+power"]["labels_to_95"]
    assert bald["n_censored"] == 5 and bald["mean"] == 13
    assert st["bald+power"]["saving_95"] == pytest.approx(1 - 13 / 15)
    assert "censored" in st["bald+power"]["stats"]["note"]
    # 100%: random reaches its own full-data Dice exactly at n=15; uncertainty: 12 >= 0.74+.001s
    assert st["random"]["labels_to_100"]["mean"] == 15
    assert st["uncertainty"]["labels_to_100"]["per_seed"] == {str(s): 12 for s in SEEDS}


def test_paired_statistics(sweep):
    _, summary = sweep
    st = summary["datasets"]["tem"]["strategies"]
    rand = [st["random"]["alc"]["per_seed"][str(s)] for s in SEEDS]
    raw = {}
    for name in ("bald+power", "uncertainty"):
        alc = [st[name]["alc"]["per_seed"][str(s)] for s in SEEDS]
        raw[name] = stats.wilcoxon(alc, rand, alternative="two-sided").pvalue
        assert st[name]["stats"]["wilcoxon_p"] == pytest.approx(raw[name])
        assert st[name]["stats"]["n_paired"] == 5
    assert raw["uncertainty"] == pytest.approx(2 / 2**5)  # all 5 differences positive
    adj = holm([raw["bald+power"], raw["uncertainty"]])
    assert st["bald+power"]["stats"]["p_holm"] == pytest.approx(adj[0])
    assert st["uncertainty"]["stats"]["p_holm"] == pytest.approx(adj[1])
    assert "stats" not in st["random"]
    # bootstrap CI contains the true ratio and excludes 1: uncertainty always needs fewer
    lo, hi = st["uncertainty"]["stats"]["ratio_ci"]
    assert lo <= 7.8 / 15 <= hi < 1
    assert lo >= 6 / 15 and hi <= 9 / 15


def test_full_data_fallback_note(tmp_path):
    root = build_runs(tmp_path / "runs", random_exhausts=False)
    out = tmp_path / "report"
    summary = write_report([root], out)
    tem = summary["datasets"]["tem"]
    assert tem["full_data"]["source"] == "random_fallback"
    note = "full-data Dice unavailable: random's Dice at n=12 used"
    assert note in tem["full_data"]["note"]
    assert note in (out / "table.md").read_text()
    assert note.replace("'", "&#x27;") in (out / "report.html").read_text()
    assert note in (out / "table.csv").read_text()
    # with random's own n=12 Dice as reference, random reaches 95% at 12 and 100% at 12
    assert tem["strategies"]["random"]["labels_to_100"]["mean"] == 12


# ------------------------------------------------------------------------------------------
# Written report
# ------------------------------------------------------------------------------------------
def test_write_report_files(tmp_path):
    root = build_runs(tmp_path / "runs", maps=True)
    # a second dataset with random only, to check one row per dataset x strategy
    for seed in (0, 1):
        write_run(root, make_run("sem", "random", seed, random_dice, 15))
    out = tmp_path / "report"
    summary = write_report(root, out)

    for name in ("learning_curves.png", "learning_curves.svg", "table.md", "table.csv",
                 "summary.csv", "summary.json", "report.html", "uncertainty_maps.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes cleaned up
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (out / "learning_curves.svg").read_text()

    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    keys = {(r["dataset"], r["strategy"]) for r in rows}
    assert len(rows) == 4 and keys == {
        ("tem", "random"), ("tem", "uncertainty"), ("tem", "bald+power"), ("sem", "random"),
    }  # fmt: skip
    by = {(r["dataset"], r["strategy"]): r for r in rows}
    assert by[("tem", "random")]["ratio_ci_low"] == "" and by[("tem", "random")]["p_holm"] == ""
    assert float(by[("tem", "uncertainty")]["alc_mean"]) == pytest.approx(
        summary["datasets"]["tem"]["strategies"]["uncertainty"]["alc"]["mean"]
    )
    assert by[("sem", "random")]["n_seeds"] == "2"

    text = (out / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text) == summary

    md = (out / "table.md").read_text()
    assert "## tem" in md and "bald+power" in md and "Dice n=15" in md

    page = (out / "report.html").read_text()
    assert page.count("<img") >= 1 + 4  # learning curves + the 4 uncertainty-map rounds
    assert "data:image/png;base64," in page
    assert "<table>" in page
    for name in ("random", "uncertainty", "bald+power", "sem", "tem"):
        assert name in page
    assert "Uncertainty-map evolution" in page and "seed 0" in page
    # self-contained: no external resources
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Holm" in page and "censored" in page


def test_acquisition_seconds_per_round_reach_the_tables(tmp_path):
    """The placement comparison weighs label efficiency against acquisition time."""
    run = make_run("tem", "random", 0, random_dice, 15)  # empties the pool: last round picks none
    for r, rec in enumerate(run["rounds"]):
        rec["acquire_seconds"] = float(r)
    assert acquire_seconds(run) == pytest.approx(1.5)  # rounds 0-3; round 4 chose nothing
    write_run(tmp_path / "runs", run)
    out = tmp_path / "report"
    write_report(tmp_path / "runs", out)
    with open(out / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["acquire_seconds_mean"]) == pytest.approx(1.5)
    assert "acquire s/round" in (out / "table.md").read_text()
    assert "| 1.5 |" in (out / "table.md").read_text()


def test_report_without_maps_and_unfinished_runs(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1, 2):
        write_run(root, make_run("tem", "random", seed, random_dice, 15))
    write_run(root, make_run("tem", "entropy", 0, uncertainty_dice, 9, finished=False))
    out = tmp_path / "report"
    assert "entropy" not in write_report([root], out)["datasets"]["tem"]["strategies"]
    summary = write_report([root], out, few_seeds=True)  # kept when asked for
    page = (out / "report.html").read_text()
    assert "No run saved uncertainty maps" in page
    ent = summary["datasets"]["tem"]["strategies"]["entropy"]
    assert ent["n_unfinished"] == 1 and ent["n_seeds"] == 1
    assert math.isnan(report._num(ent["stats"]["wilcoxon_p"]))
    assert "only 1 paired seed" in ent["stats"]["note"]
    assert summary["datasets"]["tem"]["alc_range"] == [3, 9]
    assert any("unfinished" in n for n in summary["notes"])


def test_corrupt_results_raise_value_error_naming_file(tmp_path):
    build_runs(tmp_path)
    bad = tmp_path / "tem" / "random" / "seed9" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"dataset": "tem", "rounds": [')
    with pytest.raises(ValueError, match="seed9"):
        load_runs([tmp_path])
    bad.write_text('{"dataset": "tem"}')
    with pytest.raises(ValueError, match=r"seed9.*required key"):
        load_runs([bad])
    with pytest.raises(ValueError, match="nope"):
        load_runs([tmp_path / "nope"])


def test_edge_cases_no_baseline_empty_curves_and_label_baseline(tmp_path):
    runs = [make_run("x", "entropy", s, uncertainty_dice, 12) for s in (0, 1)]
    runs.append({"dataset": "x", "strategy": "bald", "seed": 0, "rounds": []})
    runs.append({"dataset": "y", "strategy": "random", "seed": "a", "rounds": []})
    runs.append(make_run("z", "random", 0, random_dice, 15, label="random-v2"))
    runs.append(make_run("z", "entropy", 0, uncertainty_dice, 12))
    summary = write_report(runs, tmp_path, few_seeds=True)  # must not raise on any of these
    x, y, z = (summary["datasets"][k] for k in "xyz")
    assert x["baseline"] is None and any("no random baseline" in n for n in x["notes"])
    assert x["strategies"]["bald"]["alc"]["mean"] is None
    assert y["full_data"]["source"] == "unavailable"
    assert z["baseline"] == "random-v2"  # a labelled variant of strategy random is the baseline
    assert z["strategies"]["entropy"]["saving_95"] == pytest.approx(1 - 9 / 15)
    assert "only 1 paired seed" in z["strategies"]["entropy"]["stats"]["note"]
    assert (tmp_path / "report.html").exists()


# ------------------------------------------------------------------------------------------
# Pixel budgets, full-data reference, MDE, subjects, restarts, figures
# ------------------------------------------------------------------------------------------
POOL_PIXELS = 1_000_000
FRACTIONS = [0.01, 0.03, 0.06, 0.12, 0.24]


def tile_dice(f: float, seed: int, strategy: str) -> float:
    """Linear in the pixel fraction, so ALC and interpolated cells are known in closed form."""
    slope = 1.0 if strategy == "random" else 1.5
    return 0.5 + slope * f + 0.001 * seed


def make_tile_run(strategy: str, seed: int) -> dict:
    """A tile study whose unit counts (n_labelled) disagree with its pixel fractions."""
    # each seed's rounds land on slightly different fractions: seed 1 starts and ends later
    fracs = [f + 0.002 * seed for f in FRACTIONS]
    rounds = []
    for r, f in enumerate(fracs):
        rounds.append(
            {
                "round": r,
                "n_labelled": 10 * (r + 1) ** 2,  # not proportional to the fraction
                "labelled": [f"img{i}@0,0,64,64" for i in range(r + 1)],
                "selected": [] if r == len(fracs) - 1 else [f"img{r + 1}@0,0,64,64"],
                "scores": {},
                "steps": 100,
                "restarts": 0,
                "labelled_pixels": int(round(f * POOL_PIXELS)),
                "labelled_fraction": f,
                "test": {"dice": tile_dice(f, seed, strategy)},
                "acquire_seconds": 0.1,
            }
        )
    return {
        "dataset": "tem",
        "task": "myelin",
        "strategy": strategy,
        "seed": seed,
        "unit": "tile",
        "tile_size": 64,
        "pool_pixels": POOL_PIXELS,
        "fold": None,
        "rounds": rounds,
        "finished": True,
    }


def make_full_run(seed: int, dice: float, dataset: str = "tem", per_subject=None) -> dict:
    test = {"dice": dice}
    if per_subject is not None:
        test["per_subject"] = per_subject
    return {
        "dataset": dataset,
        "task": "myelin",
        "strategy": "full",
        "seed": seed,
        "unit": "image",
        "pool_pixels": POOL_PIXELS,
        "rounds": [
            {
                "round": 0,
                "n_labelled": INITIAL + POOL,
                "labelled": [],
                "selected": [],
                "scores": {},
                "steps": 100,
                "restarts": 0,
                "labelled_pixels": POOL_PIXELS,
                "labelled_fraction": 1.0,
                "test": test,
            }
        ],
        "finished": True,
    }


def test_a_tile_seed_that_never_reaches_95_percent_is_a_bound_at_its_last_fraction(tmp_path):
    """Censored in pixels means "more than the run labelled", not "the whole pool": a bound at
    the whole pool would make a censored random look several times dearer than measured."""
    runs = [make_tile_run(st, s) for st in ("random", "bald") for s in (0, 1, 2)]
    runs += [make_full_run(s, 0.99) for s in (0, 1, 2)]  # 95% of 0.99: out of every run's reach
    st = write_report(runs, tmp_path)["datasets"]["tem/tile"]["strategies"]
    for name in ("random", "bald"):
        block = st[name]["budget_fraction_to_95"]
        assert block["n_censored"] == 3
        for seed in (0, 1, 2):
            last = FRACTIONS[-1] + 0.002 * seed
            assert block["per_seed"][str(seed)] == pytest.approx(last)
    assert st["bald"]["stats"]["fraction_ratio"] == pytest.approx(1.0)


def test_tile_runs_use_the_pixel_fraction_and_never_mix_with_images(tmp_path):
    runs = [make_tile_run(st, s) for st in ("random", "bald") for s in (0, 1, 2)]
    runs += [make_run("tem", "random", s, random_dice, 15) for s in (0, 1)]  # an image study
    summary = write_report(runs, tmp_path)
    assert set(summary["datasets"]) == {"tem", "tem/tile"}
    image, tile = summary["datasets"]["tem"], summary["datasets"]["tem/tile"]
    assert list(image["strategies"]) == ["random"] and image["budget_axis"] == "n_labelled"
    assert tile["unit"] == "tile" and tile["budget_axis"] == "labelled_fraction"
    # common range: the latest first fraction (seed 2) to the earliest last one (seed 0)
    lo, hi = 0.01 + 0.004, 0.24
    assert tile["alc_range"] == pytest.approx([lo, hi])
    st = tile["strategies"]
    for seed in (0, 1, 2):  # linear in f: normalised ALC = value at the range's midpoint
        for name in ("random", "bald"):
            expected = tile_dice((lo + hi) / 2, seed, name)
            assert st[name]["alc"]["per_seed"][str(seed)] == pytest.approx(expected)
    # table columns: fixed pixel budgets inside the runs' range, interpolated per seed
    assert tile["budgets"] == ["1%", "2%", "5%", "10%", "20%"]
    assert st["bald"]["dice_by_budget"]["1%"]["n"] == 1  # only seed 0's curve starts at 1%
    cell = st["bald"]["dice_by_budget"]["5%"]
    assert cell["n"] == 3
    assert cell["mean"] == pytest.approx(np.mean([tile_dice(0.05, s, "bald") for s in (0, 1, 2)]))
    # budget to 95% of the fallback (random's last Dice) is a fraction, not a unit count
    l95 = st["bald"]["labels_to_95"]["per_seed"]["0"]
    assert 0 < l95 <= 0.24
    assert st["bald"]["budget_fraction_to_95"]["per_seed"]["0"] == pytest.approx(l95)
    assert "of pool pixels" in tile["full_data"]["note"]
    md = (tmp_path / "table.md").read_text()
    assert "Dice @5%" in md and "budget to 95%" in md and "## tem\n" in md
    with open(tmp_path / "summary.csv", newline="") as fh:
        rows = {(r["unit"], r["strategy"]): r for r in csv.DictReader(fh)}
    assert rows[("tile", "bald")]["dataset"] == "tem"
    assert float(rows[("tile", "bald")]["budget_fraction_to_95_mean"]) == pytest.approx(
        st["bald"]["budget_fraction_to_95"]["mean"]
    )
    assert rows[("image", "random")]["budget_fraction_to_95_mean"] == ""  # old runs: no pixels
    # the figure plots the tile study against the labelled-pixel percentage
    fig = report.learning_curve_figure(summary)
    ax = next(a for a in fig.axes if a.get_title().startswith("tem/tile"))
    assert ax.get_xlabel() == "labelled pixels (% of pool, log scale)"
    assert ax.get_xscale() == "log"  # geometric budgets: small ones are not squeezed together
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and set(ticks) <= set(report.figures.BUDGET_TICKS)
    curves = [ln for ln in ax.get_lines() if ln.get_label().startswith(("random (", "bald ("))]
    assert len(curves) == 2
    xs = np.concatenate([ln.get_xdata() for ln in curves])
    assert xs.min() == pytest.approx(100 * lo) and xs.max() == pytest.approx(100 * hi)


def test_full_data_reference_sets_targets_and_is_no_strategy(tmp_path):
    runs = []
    for seed in SEEDS:
        runs.append(make_run("tem", "random", seed, random_dice, 15))  # exhausts the pool
        runs.append(make_run("tem", "uncertainty", seed, uncertainty_dice, 12))
        if seed != 4:  # seed 4 lacks a reference run: the mean over seeds 0-3 is used
            runs.append(make_full_run(seed, 0.75 + 0.001 * seed))
    summary = write_report(runs, tmp_path)
    tem = summary["datasets"]["tem"]
    full = tem["full_data"]
    assert full["source"] == "full_runs"
    for seed in (0, 1, 2, 3):
        assert full["per_seed"][str(seed)] == pytest.approx(0.75 + 0.001 * seed)
    assert full["per_seed"]["4"] == pytest.approx(0.7515)
    assert "no full-data run for seed(s) 4" in full["note"]
    assert full["reference"]["n_seeds"] == 4
    st = tem["strategies"]
    assert list(st) == ["random", "uncertainty"]  # the reference is not a strategy
    # random labelled the whole pool (Dice 0.74 + 0.001 s at n=15), but the reference, not
    # that last point, is the target: 100% of 0.75 + 0.001 s is never reached (censored)
    assert st["random"]["labels_to_100"]["n_censored"] == 5
    assert st["random"]["labels_to_95"]["per_seed"] == {str(s): 15 for s in SEEDS}
    assert st["uncertainty"]["labels_to_95"]["per_seed"] == {
        "0": 9, "1": 9, "2": 9, "3": 6, "4": 6,
    }  # fmt: skip
    # paired tests: one strategy against random, Holm over one test, no 'full' anywhere
    p = st["uncertainty"]["stats"]["wilcoxon_p"]
    assert st["uncertainty"]["stats"]["p_holm"] == pytest.approx(p)
    assert any("across 1 strategy" in n for n in tem["notes"])
    with open(tmp_path / "summary.csv", newline="") as fh:
        assert [r["strategy"] for r in csv.DictReader(fh)] == ["random", "uncertainty"]
    head, body = report.main_table(tem)
    assert body[-1][0] == "full data" and "Dice, full data" in head
    assert body[-1][head.index("Dice, full data")] == "0.752 ± 0.001"
    assert "| full data | 4 |" in (tmp_path / "table.md").read_text()
    fig = report.learning_curve_figure(summary)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "full data (n=4 seeds)" in labels and not any(lb.startswith("full (") for lb in labels)


def test_without_full_runs_the_old_fallback_stays(sweep):
    _, summary = sweep
    full = summary["datasets"]["tem"]["full_data"]
    assert full["source"] == "full_pool" and full["reference"] is None


def test_mde_alc_matches_hand_computation(sweep, tmp_path):
    # d = [0.01, 0.03, 0.02]: sd 0.01, n 3 -> (t(.975, 2) + t(.8, 2)) * 0.01 / sqrt(3)
    assert report.mde_paired([0.51, 0.53, 0.52], [0.5, 0.5, 0.5]) == pytest.approx(
        (4.302653 + 1.060660) * 0.01 / math.sqrt(3), rel=1e-5
    )
    assert math.isnan(report.mde_paired([0.5], [0.4]))
    root, summary = sweep
    st = summary["datasets"]["tem"]["strategies"]
    d = [
        st["uncertainty"]["alc"]["per_seed"][str(s)] - st["random"]["alc"]["per_seed"][str(s)]
        for s in SEEDS
    ]
    n = len(d)
    expected = (
        (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * np.std(d, ddof=1) / math.sqrt(n)
    )
    assert st["uncertainty"]["mde_alc"] == pytest.approx(expected)
    assert st["uncertainty"]["stats"]["mde_alc"] == pytest.approx(expected)
    assert "mde_alc" not in st["random"]
    write_report(root, tmp_path)
    with open(tmp_path / "summary.csv", newline="") as fh:
        rows = {r["strategy"]: r for r in csv.DictReader(fh)}
    assert float(rows["uncertainty"]["mde_alc"]) == pytest.approx(expected)
    assert rows["random"]["mde_alc"] == ""
    assert "MDE (ALC)" in (tmp_path / "table.md").read_text()


def _with_subjects(run: dict, axon: bool = False) -> dict:
    """Seed s tests subjects A and B (even s) or B and C (odd s); A is 0.1 above the Dice."""
    subjects = ("A", "B") if run["seed"] % 2 == 0 else ("B", "C")
    offset = {"A": 0.1, "B": 0.0, "C": -0.1}
    for r in run["rounds"]:
        d = r["test"]["dice"]
        r["test"]["per_subject"] = {
            s: {
                "dice": d + offset[s],
                "dice_myelin": d + offset[s],
                "dice_axon": (d + offset[s] - 0.2) if axon else None,
            }
            for s in subjects
        }
        if axon:
            r["test"]["dice_axon"] = d - 0.2
    if axon:
        run["task"] = "axonmyelin"
    return run


def test_dice_per_test_subject_and_per_class(tmp_path):
    runs = []
    for seed in range(4):
        runs.append(_with_subjects(make_run("tem", "random", seed, random_dice, 15), True))
        runs.append(_with_subjects(make_run("tem", "bald", seed, bald_dice, 12), True))
    summary = write_report(runs, tmp_path)
    tem = summary["datasets"]["tem"]
    assert tem["alc_range"] == [3, 12]
    per = tem["per_subject"]["dice"]
    assert sorted(per) == ["A", "B", "C"]
    # random ran to n=15, but the table reads each run at the end of the common range (n=12)
    a = per["A"]["random"]
    assert a["n"] == 2 and a["mean"] == pytest.approx(
        np.mean([random_dice(12, s) + 0.1 for s in (0, 2)])
    )
    assert per["B"]["bald"]["n"] == 4
    assert per["C"]["bald"]["mean"] == pytest.approx(
        np.mean([bald_dice(12, s) - 0.1 for s in (1, 3)])
    )
    assert "dice_axon" in tem["per_subject"] and "dice_myelin" in tem["per_subject"]
    md = (tmp_path / "table.md").read_text()
    assert "Dice per test subject:" in md and "axon Dice per test subject:" in md
    assert f"| A | {a['mean']:.3f} ± " in md and "(n=2)" in md
    # per-class Dice at the end of the common range in the main table
    head, body = report.main_table(tem)
    col = head.index("axon Dice @n=12")
    expected = np.mean([random_dice(12, s) - 0.2 for s in range(4)])
    assert body[0][col].startswith(f"{expected:.3f} ± ")
    assert "Dice per test subject" in (tmp_path / "report.html").read_text()


def test_restarts_are_counted_per_strategy(tmp_path):
    runs = [make_run("tem", st, s, random_dice, 12) for st in ("random", "bald") for s in (0, 1)]
    runs[0]["rounds"][1]["restarts"] = 2  # random seed 0
    runs[1]["rounds"][2]["restarts"] = 1  # random seed 1
    summary = write_report(runs, tmp_path)
    tem = summary["datasets"]["tem"]
    assert tem["strategies"]["random"]["restarts"] == {"total": 3, "rounds": 2}
    assert tem["strategies"]["bald"]["restarts"] == {"total": 0, "rounds": 0}  # no field: 0
    assert tem["restarts_total"] == 3
    with open(tmp_path / "summary.csv", newline="") as fh:
        rows = {r["strategy"]: r for r in csv.DictReader(fh)}
    assert rows["random"]["restarts"] == "3" and rows["bald"]["restarts"] == "0"
    md = (tmp_path / "table.md").read_text()
    assert "| 3 (2 rounds) |" in md and "3 restart(s) in this group" in md


def test_a_round_kept_collapsed_is_named_in_the_report(tmp_path):
    """A round whose restarts ran out keeps its (collapsed) scores; the reader is told which."""
    runs = [make_run("tem", st, s, random_dice, 12) for st in ("random", "bald") for s in (0, 1)]
    runs[3]["rounds"][2].update(restarts=2, collapsed=True)  # bald seed 1, round 2
    runs[0]["rounds"][1].update(restarts=1, collapsed=False)  # retrained, then fine: not named
    summary = write_report(runs, tmp_path)
    tem = summary["datasets"]["tem"]
    assert tem["strategies"]["bald"]["collapsed"] == ["seed 1 round 2"]
    assert tem["strategies"]["random"]["collapsed"] == []
    note = "rounds kept collapsed (still collapsed when the restarts ran out"
    named = [n for n in tem["notes"] if n.startswith(note)]
    assert len(named) == 1 and named[0].endswith("bald: seed 1 round 2")
    assert note in (tmp_path / "table.md").read_text()
    assert "bald: seed 1 round 2" in (tmp_path / "report.html").read_text()
    clean = write_report(runs[:3], tmp_path / "clean")
    assert not any(n.startswith(note) for n in clean["datasets"]["tem"]["notes"])


def test_units_axis_has_integer_ticks(tmp_path):
    runs = [make_run("tem", "random", s, random_dice, 4) for s in (0, 1)]
    for run in runs:  # budgets 1 and 2: matplotlib's default ticks would be 1.0, 1.2, ...
        for r in run["rounds"]:
            r["n_labelled"] -= 2
        run["rounds"].append({**run["rounds"][0], "round": 1, "n_labelled": 2})
    summary = summarize(runs)
    ax = report.learning_curve_figure(summary).axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "labelled images"


def _png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_uniform_predictions_render_in_their_class_colour(tmp_path):
    from axal.overlays import save_uncertainty_png

    image = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    unc = np.zeros((32, 32))
    kw = {"measure": "BALD (mutual information, nats)", "n_classes": 2}
    myelin = save_uncertainty_png(tmp_path / "m.png", image, np.ones((32, 32)), unc, "x", **kw)
    back = save_uncertainty_png(tmp_path / "b.png", image, np.zeros((32, 32)), unc, "x", **kw)
    a, b = _png(myelin), _png(back)
    assert a.shape == b.shape
    h, w = a.shape[:2]
    centre = (h // 2, w // 2)  # the middle of the prediction panel
    assert not np.allclose(a[centre], b[centre])
    # three classes: background and axon differ too, and myelin keeps its colour
    axon = save_uncertainty_png(
        tmp_path / "a.png", image, np.full((32, 32), 2), unc, "x", measure="m", n_classes=3
    )
    myelin3 = save_uncertainty_png(
        tmp_path / "m3.png", image, np.ones((32, 32)), unc, "x", measure="m", n_classes=3
    )
    assert not np.allclose(_png(axon)[centre], b[centre])
    np.testing.assert_allclose(_png(myelin3)[centre], a[centre])


def test_maps_name_their_measure_image_and_role(tmp_path, monkeypatch):
    from axal import round_acquisition
    from axal.acquisition import BALD, Hybrid, MCDropout

    seen = {}
    monkeypatch.setattr(round_acquisition, "save_uncertainty_png", lambda *a, **k: seen.update(k))
    cb = round_acquisition.Acquisition(BALD(), 1, 2, 0, 3, maps_dir=tmp_path)
    cb.selected = ["img@0,0,8,8"]
    cb.scores = {"img@0,0,8,8": 0.5, "img@8,0,8,8": 0.25}
    dm = type("DM", (), {"images": {"img": np.zeros((8, 8), dtype=np.float32)}})()
    kept = {"img": (np.zeros((8, 8)), np.zeros((8, 8)))}
    (path,) = cb._save_maps(dm, kept, ["img"], picked={"img"}, n_classes=3)
    assert seen["measure"] == "BALD (mutual information, nats)" and seen["n_classes"] == 3
    assert "picked" in seen["title"] and "img" in seen["title"] and "0.5" in seen["title"]
    assert report.figures.map_caption(path) == ("picked", "img")
    # old runs: the measure comes from the strategy in their config
    old = {"config": {"strategy": {"_target_": "axal.acquisition.BALD", "name": "bald_power"}}}
    assert report.measure_name(old) == BALD.measure
    hybrid = {"config": {"strategy": {"_target_": "axal.acquisition.Hybrid", "base": "entropy"}}}
    assert report.measure_name(hybrid) == Hybrid(base="entropy").measure
    assert "edge" in MCDropout(apply_edt=True).measure
    assert report.measure_name({"config": {"strategy": {"_target_": "os.system"}}}) == (
        "uncertainty"
    )


def test_maps_come_from_the_lowest_seed_whose_files_are_here(tmp_path):
    """A committed sweep has no maps/ folders: show a seed whose maps exist, say so once."""
    root = build_runs(tmp_path / "runs", maps=True)
    for seed in (0, 1):  # as after a clone: results.json names maps that are not on disk
        for f in (root / "tem" / "uncertainty" / f"seed{seed}" / "maps").iterdir():
            f.unlink()
    out = tmp_path / "report"
    write_report(root, out)
    page = (out / "report.html").read_text()
    assert "tem / uncertainty (seed 2)" in page
    assert "not on this disk" not in page and "missing" not in page
    assert (out / "uncertainty_maps.png").stat().st_size > 0

    for seed in SEEDS[2:]:  # no seed has its maps: one note, no list of missing files
        for f in (root / "tem" / "uncertainty" / f"seed{seed}" / "maps").iterdir():
            f.unlink()
    write_report(root, out)
    page = (out / "report.html").read_text()
    assert "tem / uncertainty (seed 0)" in page
    assert page.count("not on this disk") == 1 and "missing:" not in page


def test_paired_difference_from_random_is_per_seed_with_a_t_band(sweep, tmp_path):
    root, summary = sweep
    diffs = report.paired_differences(summary, load_runs([root]))
    unc = diffs["tem"]["uncertainty"]
    assert "random" not in diffs["tem"]  # the baseline is the zero line
    for i, n in enumerate(unc["x"]):
        per_seed = [uncertainty_dice(int(n), s) - random_dice(int(n), s) for s in SEEDS]
        assert unc["mean"][i] == pytest.approx(np.mean(per_seed))
        half = stats.t.ppf(0.975, len(SEEDS) - 1) * np.std(per_seed, ddof=1) / len(SEEDS) ** 0.5
        assert unc["ci_low"][i] == pytest.approx(np.mean(per_seed) - half)
        assert unc["ci_high"][i] == pytest.approx(np.mean(per_seed) + half)
        assert unc["n"][i] == len(SEEDS)
    # bald+power is random +0.004 on odd seeds, -0.003 on even ones: a band around ~0
    bald = diffs["tem"]["bald+power"]
    assert all(lo < 0 < hi for lo, hi in zip(bald["ci_low"], bald["ci_high"], strict=True))

    out = tmp_path / "report"
    write_report(root, out)
    assert (out / "paired_difference.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "Paired difference from random" in page and "paired t-interval" in page


def aim_run(strategy: str, seed: int, dice: list, gratio: list, seconds: list) -> dict:
    """A tile run of task=axonmyelin whose rounds have a test Dice, a g-ratio error and the
    correction seconds of the units picked after them."""
    run = make_tile_run(strategy, seed)
    run["task"] = "axonmyelin"
    for record, d, g, c in zip(run["rounds"], dice, gratio, seconds, strict=True):
        record["test"] = {"dice": d, "dice_axon": d, "dice_myelin": d, "gratio_error": g}
        if c is not None:
            record["correction"] = {"correction_seconds": c}
    return run


def test_effort_to_the_aim_needs_both_dice_and_gratio_and_counts_picks_before_it():
    from axal.report.statistics import effort_to_aim

    run = {
        "rounds": [
            {
                "test": {"dice": 0.60, "gratio_error": 0.050},
                "correction": {"correction_seconds": 10},
            },
            {
                "test": {"dice": 0.90, "gratio_error": 0.020},
                "correction": {"correction_seconds": 20},
            },
            {
                "test": {"dice": 0.90, "gratio_error": 0.005},
                "correction": {"correction_seconds": 30},
            },
            {"test": {"dice": 0.91, "gratio_error": 0.004}},
        ]
    }
    # 0.95 x 0.93 = 0.8835: round 1's Dice is enough, its g-ratio is not; round 2 meets both,
    # so the corrections of the picks made after rounds 0 and 1 were needed
    assert effort_to_aim(run, 0.93) == (30.0, False)
    assert effort_to_aim(run, 0.99) == (60.0, True)  # never: the total, censored
    assert math.isnan(effort_to_aim(run, float("nan"))[0])
    no_gratio = {"rounds": [{"test": {"dice": 0.9}}]}  # task=myelin: no verdict
    assert math.isnan(effort_to_aim(no_gratio, 0.9)[0])


def test_which_arm_reaches_a_target_first_counts_a_seed_that_never_did_as_its_bound():
    """Gehan's scoring: a seed that never reaches spent more than its bound, so it loses to
    one that reached for less; the seeds the data cannot order are undecided, not wins."""
    from axal.report.statistics import first_to_reach

    arm = {"0": 10, "1": 30, "2": 15, "3": 50, "4": 60, "5": 10, "6": 10, "7": 20, "8": 5}
    base = {"0": 20, "1": 20, "2": 40, "3": 40, "4": 40, "5": 5, "6": 12, "7": 20, "8": None}
    # arm never reached on 4, 5, 6; random never on 2, 3, 4; seed 8 has no random value
    first = first_to_reach(arm, ["4", "5", "6"], base, ["2", "3", "4"])
    assert first["arm_first"] == ["0", "2"]  # 10 < 20; 15 reached before random's bound 40
    assert first["base_first"] == ["1", "5"]  # 20 < 30; 5 reached before the arm's bound 10
    assert first["tied"] == ["7"]
    assert first["undecided"] == ["3", "4", "6"]  # 50 > bound 40; both never; 12 > bound 10
    assert first["n_decided"] == 4 and first["sign_p"] == pytest.approx(1.0)
    assert first["min_p"] == pytest.approx(2 / 2**4)
    assert first["share_first"] == 0.5  # 2 of the 4 decided seeds
    low, high = first["share_first_ci"]  # exact binomial: 2 of 4 leaves nearly everything open
    assert low == pytest.approx(stats.beta.ppf(0.025, 2, 3)) and high == pytest.approx(1 - low)
    six = first_to_reach({str(s): 1.0 for s in range(6)}, [], {str(s): 2.0 for s in range(6)}, [])
    assert six["arm_first"] == [str(s) for s in range(6)]
    assert six["sign_p"] == pytest.approx(2 / 2**6)  # exact two-sided binomial, 6 of 6
    nothing = first_to_reach({"0": 3.0}, ["0"], {"0": 4.0}, ["0"])
    assert nothing["n_decided"] == 0 and math.isnan(nothing["sign_p"])


def test_the_report_says_whether_an_arm_reaches_the_aim(tmp_path):
    """95% of the full-data Dice (0.9 here) with the g-ratio within 0.01, 5 seeds: random gets there
    after 100 s of corrections, 'cheap' after 30 s (ratio 0.3 on every seed: reached),
    'dear' after 80 s (not reached), 'never' does not get there within the budget."""
    n = len(FRACTIONS)
    dice = [0.70] * (n - 3) + [0.87, 0.87, 0.87]  # >= 0.855 from round n - 3 on
    gratio = [0.05] * (n - 2) + [0.005, 0.005]  # within 0.01 from round n - 2 on
    runs = []
    for seed in (0, 1, 2, 3, 4):
        for st, before in (("random", 100.0), ("cheap", 30.0), ("dear", 80.0), ("never", 50.0)):
            seconds = [0.0] * (n - 3) + [before + seed, 999.0, None]
            g = gratio if st != "never" else [0.05] * n
            runs.append(aim_run(st, seed, dice, g, seconds))
        runs.append(make_full_run(seed, 0.9))
    summary = write_report(runs, tmp_path)
    d = summary["datasets"]["tem/tile"]
    random, cheap = d["strategies"]["random"], d["strategies"]["cheap"]
    assert random["effort_to_aim"]["per_seed"]["0"] == 100.0
    assert random["effort_to_aim"]["n_reached"] == 5
    aim = cheap["stats"]["aim"]
    assert aim["ratio"] == pytest.approx(
        sum(30 + s for s in range(5)) / sum(100 + s for s in range(5))
    )
    assert aim["ratio_ci"][1] < 0.5 and aim["verdict"] == "reached"
    assert d["strategies"]["dear"]["stats"]["aim"]["verdict"].startswith("not reached (CI upper")
    never = d["strategies"]["never"]
    assert never["effort_to_aim"]["n_censored"] == 5
    assert never["stats"]["aim"]["verdict"].startswith("not reached (5 seed(s) never")
    table = (tmp_path / "table.md").read_text()
    assert "| cheap | 5 of 5 |" in table and "| reached |" in table
    # cheap reaches the aim for less on all 5 seeds; never spends its whole run (1049 s and
    # more) without reaching it, more than random's 100-104 s: random is first on all 5
    assert cheap["stats"]["aim"]["first"]["arm_first"] == ["0", "1", "2", "3", "4"]
    assert never["stats"]["aim"]["first"]["base_first"] == ["0", "1", "2", "3", "4"]
    assert "| 5 / 0, 100% [48, 100] (0 undecided) | 0.062 (cannot go below 0.062) |" in table
    rows = {r["strategy"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert (
        rows["never"]["first_to_aim_random"] == "5" and rows["random"]["first_to_aim_random"] == ""
    )
    # the same arms on 4 seeds: too few for a verdict
    few = summarize([r for r in runs if r["seed"] != 4])["datasets"]["tem/tile"]
    assert few["strategies"]["cheap"]["stats"]["aim"]["verdict"].startswith("not shown (4 paired")
    assert "The aim" in (tmp_path / "report.html").read_text()


def test_a_study_in_progress_is_reported_on_the_seeds_every_arm_and_replicate_finished(
    tmp_path, capsys
):
    """Seed 1 lacks a finished bald+power, seed 2 random's second draw, seed 3 has only its
    reference: the report keeps seeds 0 and 4, and the references of those seeds alone."""
    from axal.sweep import main_report

    root = tmp_path / "runs"
    for seed in range(5):
        if seed == 3:
            write_run(root / "full", make_full_run(seed, 0.9))
            continue
        write_run(root, make_run("tem", "random", seed, random_dice, 12))
        second = make_run("tem", "random", seed, random_dice, 12, finished=seed != 2)
        second["replicate"] = 1
        write_run(root / "rep1", second)
        bald = make_run("tem", "bald", seed, bald_dice, 12, label="bald+power", finished=seed != 1)
        write_run(root, bald)
        if seed in (0, 2):
            write_run(root / "full", make_full_run(seed, 0.9))
    out = tmp_path / "report"
    assert main_report([root], out, complete_seeds=True) == 0
    assert "seed(s) 1, 2, 3 left out" in capsys.readouterr().out
    tem = json.loads((out / "summary.json").read_text())["datasets"]["tem"]
    assert {name: s["n_seeds"] for name, s in tem["strategies"].items()} == {
        "random": 2,
        "bald+power": 2,
    }
    assert tem["full_data"]["reference"]["seeds"] == [0]  # seed 2's reference went with its seed
    assert main_report([root], out, include_unfinished=True, complete_seeds=True) == 2


def test_the_report_names_the_seeds_whose_runs_trained_on_other_machines(tmp_path):
    """Another processor's kernels train other floats: a seed split across machines is named."""
    epyc = {"cpu": "AMD EPYC", "cpu_features": ["avx2", "avx512f"], "torch": "2.14.1"}
    xeon = {**epyc, "cpu": "Intel Xeon", "cpu_capability": "AVX512"}
    capped = {**xeon, "isa_settings": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    runs = [make_run("tem", st, s, random_dice, 12) for st in ("random", "bald") for s in (0, 1)]
    runs[0]["environment"] = epyc  # random seed 0; bald seed 0 records none: not a mix
    runs[1]["environment"] = epyc  # random seed 1
    runs[3]["environment"] = epyc  # bald seed 1, resumed on two other machines
    runs[3]["resumes"] = [{"environment": xeon}, {"environment": capped}, {"at": "no record"}]
    summary = write_report(runs, tmp_path)
    block = summary["datasets"]["tem"]["machines"]
    epyc_l = "AMD EPYC, AVX512 kernels, torch 2.14.1"  # kernel set from the features
    xeon_l = "Intel Xeon, AVX512 kernels, torch 2.14.1"
    capped_l = xeon_l + ", ONEDNN_MAX_CPU_ISA=AVX2"
    assert block["runs"] == {epyc_l: 3, xeon_l: 1, capped_l: 1}
    assert block["not_recorded"] == 1
    assert block["mixed_seeds"] == {"1": sorted([epyc_l, xeon_l, capped_l])}
    md = (tmp_path / "table.md").read_text()
    assert "runs trained on 3 machines" in md and "1 run(s) recorded no machine" in md
    assert "seed(s) 1: runs of one seed trained on more than one machine" in md
    assert "seed(s) 1: runs of one seed" in (tmp_path / "report.html").read_text()
    for run in runs:  # one machine for every run that recorded one: nothing to say
        run["environment"], run["resumes"] = epyc, []
    one = write_report(runs, tmp_path / "one")["datasets"]["tem"]
    assert one["machines"]["mixed_seeds"] == {} and not any("machines" in n for n in one["notes"])


def test_the_report_lists_seeds_by_number_not_as_text(tmp_path):
    """Seeds come back from JSON keys as strings; a reader expects seed 2 before seed 10."""
    epyc = {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "torch": "2.14.1"}
    xeon = {**epyc, "cpu": "Intel Xeon"}
    runs = [make_run("tem", st, s, random_dice, 12) for st in ("random", "bald") for s in (10, 2)]
    for run in runs:
        run["environment"], run["resumes"] = epyc, [{"environment": xeon}]
    summary = write_report(runs, tmp_path)
    assert list(summary["datasets"]["tem"]["machines"]["mixed_seeds"]) == ["2", "10"]
    assert "seed(s) 2, 10: runs of one seed" in (tmp_path / "table.md").read_text()


def test_the_report_names_seeds_whose_arms_trained_their_shared_round_0_apart(tmp_path):
    """A lost round-0 cache entry trained again elsewhere breaks the pairing the design makes."""
    runs = [make_run("tem", st, s, random_dice, 12) for st in ("random", "bald") for s in (0, 1, 2)]
    for run in runs:
        seed, first = run["seed"], run["rounds"][0]
        entry = f"/somewhere/first_rounds/seed{seed}-abc"
        if seed == 0 or run["strategy"] == "random":  # seed 0: both arms trained the entry
            first["shared_first_round"] = {"entry": entry, "trained_here": True}
        else:  # seeds 1 and 2: bald loaded what random trained
            first["shared_first_round"] = {"entry": entry, "trained_here": False}
    runs[3]["rounds"][0]["test"]["dice"] = runs[0]["rounds"][0]["test"]["dice"] + 0.02
    group = write_report(runs, tmp_path)["datasets"]["tem"]
    assert list(group["round_0_apart"]) == ["0"]
    assert set(group["round_0_apart"]["0"][0]["test_dice"]) == {"random", "bald"}
    assert "round 0 trained apart on seed(s) 0 (bald " in (tmp_path / "table.md").read_text()
    runs[3]["rounds"][0]["test"]["dice"] = runs[0]["rounds"][0]["test"]["dice"]  # same weights
    again = write_report(runs, tmp_path / "same")["datasets"]["tem"]
    assert again["round_0_apart"] == {} and not any("round 0" in n for n in again["notes"])
