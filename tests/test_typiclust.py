"""First picks and baselines: TypiClust, subject stratification, foreground-aware random and a
schedule that switches strategies at a given round."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from axal.acquisition import (
    BALD,
    ClaSP,
    Entropy,
    Random,
    RandomForeground,
    Schedule,
    TypiClust,
    acquire,
    kmeans,
    select_units,
)
from axal.data.splits import split_by_subject
from axal.data.synthetic import make_synthetic
from axal.mc_dropout import PixelStats
from axal.networks import PaperUNet
from axal.pools import ActiveDataModule
from axal.round_acquisition import Acquisition
from axal.settings import build_model, build_strategy
from axal.simulation import run


def blobs(sizes: list[int], dim: int = 6, seed: int = 0) -> tuple[dict, dict, set]:
    """Well-separated blobs, each a dense core (ids ending in 'c') in a loose halo:
    (features by id, blob by id, core ids)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 30.0
    features, blob, core = {}, {}, set()
    for b, n in enumerate(sizes):
        for j in range(n):
            dense = j < n // 3
            uid = f"b{b}-{j:02d}" + ("c" if dense else "")
            features[uid] = centres[b] + rng.normal(size=dim) * (0.1 if dense else 2.0)
            blob[uid] = b
            if dense:
                core.add(uid)
    return features, blob, core


def test_typiclust_picks_every_cluster_once_before_any_twice_without_labels() -> None:
    sizes = [30, 24, 18, 12, 9]
    features, blob, core = blobs(sizes)
    scores = {u: 0.0 for u in features}  # typiclust reads no score and no mask: none is given
    picks = TypiClust(min_cluster_size=1).select(
        scores, len(sizes), np.random.default_rng(0), features=features
    )
    assert sorted(blob[u] for u in picks) == list(range(len(sizes)))
    assert [blob[u] for u in picks] == list(range(len(sizes)))  # largest cluster first
    assert set(picks) <= core  # the most typical unit: from the blob's dense core
    # two more picks than clusters: every blob once, none more than twice
    more = TypiClust(min_cluster_size=1).select(
        scores, len(sizes) + 2, np.random.default_rng(1), features=features
    )
    counts = Counter(blob[u] for u in more)
    assert set(counts) == set(range(len(sizes))) and max(counts.values()) <= 2


def test_typiclust_fills_the_cluster_without_a_labelled_unit_first() -> None:
    features, blob, _ = blobs([20, 20, 20, 20])
    labelled = np.stack([features[f"b{b}-19"] for b in range(3)])  # blobs 0-2 are covered
    pool = {u: 0.0 for u in features if not u.endswith("-19") or u.startswith("b3")}
    for seed in range(3):
        pick = TypiClust().select(
            pool, 1, np.random.default_rng(seed), features=features, labelled_features=labelled
        )
        assert blob[pick[0]] == 3


def test_kmeans_separates_blobs_and_uses_every_cluster() -> None:
    features, blob, _ = blobs([10, 10, 10])
    ids = sorted(features)
    labels = kmeans(np.stack([features[u] for u in ids]), 3, np.random.default_rng(0))
    groups = {frozenset(u for u, c in zip(ids, labels) if c == k) for k in range(3)}
    assert groups == {frozenset(u for u in ids if blob[u] == b) for b in range(3)}
    assert len(set(kmeans(np.zeros((4, 2)), 3, np.random.default_rng(0)))) == 3


class _Unreadable:
    """A mask that raises when anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"a mask was read ({name})")

    def __array__(self, *a, **k):
        raise AssertionError("a mask was read (as an array)")

    def __getitem__(self, key):
        raise AssertionError("a mask was read (indexed)")


class _NoMasks(dict):
    def __getitem__(self, key):
        raise AssertionError(f"the mask of {key!r} was read")

    get = __getitem__


def test_typiclust_through_the_callback_never_reads_a_mask(cfg_factory) -> None:
    samples = make_synthetic(n_images=10, size=64, n_subjects=5, seed=0)
    splits = split_by_subject(samples, n_test=1, n_val=0, n_initial=2, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg_factory("strategy=typiclust", "dataset.infer_size=64"), 2)

    def picks(poison: bool) -> list[str]:
        dm = ActiveDataModule(samples, splits, patch_size=32, steps=1)
        if poison:
            dm.masks = _NoMasks(dm.masks)
            dm.samples = {i: replace(s, mask=_Unreadable()) for i, s in dm.samples.items()}
        callback = Acquisition(
            TypiClust(), per_round=3, mc_samples=2, seed=0, round_index=0, reveal=False
        )
        callback.progress = False
        return callback.score_and_pick(dm, model)

    clean = picks(poison=False)
    assert len(set(clean)) == 3 and set(clean) <= set(splits["pool"])
    assert picks(poison=True) == clean


def test_stratify_subject_spreads_a_batch_over_subjects() -> None:
    scores = {f"a{j}": 10.0 + j for j in range(6)} | {f"b{j}": 1.0 + j for j in range(3)}
    scores |= {"c0": 0.5}
    subjects = {u: u[0] for u in scores}
    rng = np.random.default_rng(0)
    plain = select_units(BALD(), scores, 4, rng, subjects=subjects)
    assert {subjects[u] for u in plain} == {"a"}  # top-4 are all of subject a
    spread = select_units(BALD(stratify="subject"), scores, 4, rng, subjects=subjects)
    # round-robin in score order: a, b, c, then a again; each subject's best first
    assert spread == ["a5", "b2", "c0", "a4"]
    # a subject with too few units gives its turn to the others
    many = select_units(BALD(stratify="subject"), scores, 8, rng, subjects=subjects)
    assert Counter(subjects[u] for u in many) == {"a": 4, "b": 3, "c": 1}
    # random: every batch of 3 holds each subject once, whatever the seed
    for seed in range(20):
        got = select_units(
            Random(stratify="subject"), scores, 3, np.random.default_rng(seed), subjects=subjects
        )
        assert sorted(subjects[u] for u in got) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="stratify=subject needs the subject"):
        select_units(Random(stratify="subject"), scores, 3, rng)
    with pytest.raises(ValueError, match="strategy.stratify='image'"):
        Random(stratify="image")


def test_stratify_subject_through_acquire_uses_each_images_subject() -> None:
    images = {f"s{s}-{j}": np.zeros((8, 8), np.float32) for s in range(4) for j in range(5)}
    subjects = {i: i.split("-")[0] for i in images}
    for seed in range(5):
        picks, _ = acquire(
            Random(stratify="subject"), None, images, 4, mc_samples=2, seed=seed, subjects=subjects
        )
        assert sorted(subjects[i] for i in picks) == ["s0", "s1", "s2", "s3"]


def fg_stats(share: float, size: int = 10) -> PixelStats:
    """Stats whose mean prediction calls the first ``share`` of the rows foreground (p=0.9)."""
    p1 = torch.full((size, size), 0.1)
    p1[: int(round(share * size))] = 0.9
    mean = torch.stack([1 - p1, p1])
    zero = torch.zeros(size, size)
    return PixelStats(mean, torch.zeros_like(mean), zero, zero, np.zeros(2, np.float32), 2)


def test_random_foreground_prefers_foreground_rich_units() -> None:
    strategy = RandomForeground(floor=0.0)
    shares = {"u0": 0.0, "u1": 0.2, "u2": 0.5, "u3": 0.8}
    scores = {u: strategy.score(fg_stats(s)) for u, s in shares.items()}
    assert scores["u0"] == pytest.approx(0.1) and scores["u3"] == pytest.approx(0.74)
    rng = np.random.default_rng(0)
    n = 4000
    counts = Counter(strategy.select(scores, 1, rng)[0] for _ in range(n))
    ids = sorted(scores)
    expected = np.array([scores[u] for u in ids]) / sum(scores.values()) * n
    assert chisquare([counts[u] for u in ids], expected).pvalue > 1e-3
    assert counts["u3"] > counts["u2"] > counts["u1"] > counts["u0"]
    # beta=0 is uniform random
    flat = Counter(RandomForeground(beta=0.0).select(scores, 1, rng)[0] for _ in range(n))
    assert chisquare([flat[u] for u in ids]).pvalue > 1e-3


def _tiny_net() -> PaperUNet:
    torch.manual_seed(0)
    return PaperUNet(filters=(4, 8), dropout_placement="decoder", dropout_rate=0.5)


def test_schedule_switches_from_typical_to_uncertain_picks_at_the_given_round() -> None:
    rng = np.random.default_rng(0)
    images = {f"im{i}": rng.random((32, 32)).astype(np.float32) for i in range(6)}
    schedule = Schedule(first=TypiClust(min_cluster_size=1), then=BALD(), switch_after=2)
    assert schedule.needs_mc and schedule.needs_features
    assert isinstance(schedule.for_round(1), TypiClust) and isinstance(schedule.for_round(2), BALD)
    net = _tiny_net()
    runs = {}
    for r in (0, 1, 2, 3):
        seen: list[str] = []
        picks, scores = acquire(
            schedule,
            net,
            images,
            2,
            mc_samples=3,
            seed=1,
            patch=32,
            overlap=8,
            round_index=r,
            on_image=lambda i, st, m, seen=seen: seen.append(i),
        )
        runs[r] = (picks, scores, seen)
    for r in (0, 1):  # typical picks: no MC pass, no scores
        assert runs[r][1] == {} and runs[r][2] == []
    for r in (2, 3):  # BALD: every image scored, the top two picked
        picks, scores, seen = runs[r]
        assert seen == sorted(images) and picks == sorted(scores, key=lambda i: -scores[i])[:2]
    typical, _ = acquire(
        TypiClust(min_cluster_size=1), net, images, 2, mc_samples=3, seed=1, patch=32, overlap=8
    )
    assert runs[0][0] == typical


STRATEGIES = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf/strategy").glob("*.yaml")
)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_takes_stratify_subject(cfg_factory, name) -> None:
    strategy = build_strategy(cfg_factory(f"strategy={name}", "strategy.stratify=subject"))
    assert strategy.stratify == "subject"


SMALL = ("al.per_round=2", "dataset.n_images=8", "dataset.n_subjects=4", "dataset.test_subjects=1")


def test_schedule_run_picks_typically_then_by_bald(cfg_factory, tmp_path) -> None:
    saved = run(
        cfg_factory(
            "strategy=typiclust_then_bald_power", "strategy.switch_after=1", "al.rounds=3", *SMALL
        ),
        tmp_path,
    )
    r0, r1, r2 = saved["rounds"]
    pool_at_r1 = set(saved["splits"]["initial"] + saved["splits"]["pool"]) - set(r1["labelled"])
    assert r0["scores"] == {}  # typiclust: no MC pass, nothing scored
    assert set(r1["scores"]) == pool_at_r1  # PowerBALD: every pool unit scored
    for r in (r0, r1):
        assert len(set(r["selected"])) == 2 and not set(r["selected"]) & set(r["labelled"])
    assert r2["labelled"] == r1["labelled"] + r1["selected"]


@pytest.mark.parametrize(
    "name, task",
    [("typiclust", "myelin"), ("random_foreground", "myelin"), ("clasp", "axonmyelin")],
)
def test_new_strategies_run_with_stratified_batches(cfg_factory, tmp_path, name, task) -> None:
    cfg = cfg_factory(f"strategy={name}", "strategy.stratify=subject", f"task={task}", *SMALL)
    saved = run(cfg, tmp_path)
    r0 = saved["rounds"][0]
    subjects = {s.id: s.subject for s in make_synthetic(n_images=8, size=128, n_subjects=4)}
    pool_subjects = {subjects[i] for i in saved["splits"]["pool"]}
    assert len(r0["selected"]) == 2 and set(r0["selected"]) <= set(saved["splits"]["pool"])
    assert len({subjects[i] for i in r0["selected"]}) == min(2, len(pool_subjects))
    assert (r0["scores"] == {}) == (name == "typiclust")


def test_the_annotate_page_says_how_the_new_strategies_picked() -> None:
    from axal.suggestions import how_picked

    typiclust = {"_target_": "axal.acquisition.TypiClust", "stratify": "subject"}
    record = {"config": {"strategy": typiclust}, "suggestions": [{}] * 3, "scores": {}, "round": 0}
    text = how_picked(record)
    assert "3 largest groups" in text and "no label" in text and "turns between subjects" in text
    schedule = {
        "_target_": "axal.acquisition.Schedule",
        "switch_after": 2,
        "first": typiclust,
        "then": {"_target_": "axal.acquisition.BALD"},
    }
    record = {"config": {"strategy": schedule}, "suggestions": [{}] * 2, "scores": {"a": 1.0}}
    assert "largest groups" in how_picked({**record, "round": 1})
    assert "2 highest-scoring of the 1" in how_picked({**record, "round": 2})


def test_annotate_runs_the_schedule_typical_first_then_uncertain(tmp_path) -> None:
    """annotate.py goes through the same round: round 0 suggests typical units (no scores),
    and once the annotator labels one, round 1 suggests by PowerBALD (every pool unit scored)."""
    from PIL import Image

    from axal.annotate import annotate
    from tests.test_annotate import annotate_cfg, synthetic_folder

    root = tmp_path / "lab"
    truth = synthetic_folder(root, n=6, labelled=2, size=64)
    overrides = (
        "strategy=typiclust_then_bald_power",
        "strategy.switch_after=1",
        "strategy.stratify=subject",
        "al.initial=2",
        "dataset.pixel_size=0.1",
        "dataset.patch_size=32",
        "dataset.infer_size=64",
        "dataset.batch_size=4",
        "trainer.steps=2",
        "trainer.finetune_steps=1",
    )
    r0 = annotate(annotate_cfg(root, *overrides))["rounds"][0]
    assert r0["scores"] == {} and len(r0["suggestions"]) == 2
    first = r0["suggestions"][0]["image"]
    Image.fromarray(truth[first]).save(root / first / "mask.png")
    r1 = annotate(annotate_cfg(root, *overrides))["rounds"][1]
    assert len(r1["scores"]) == 3 and len(r1["suggestions"]) == 2
    assert first not in {s["image"] for s in r1["suggestions"]}


@pytest.mark.parametrize("unit", ["image", "tile"])
def test_a_typical_initial_set_is_picked_without_labels(cfg_factory, unit) -> None:
    from axal.settings import make_splits

    samples = make_synthetic(n_images=10, size=64, n_subjects=5, seed=0)
    over = ("dataset.infer_size=64", f"al.unit={unit}", "al.tile_size=32", "al.initial=3")
    random_splits = make_splits(cfg_factory(*over), samples)
    cfg = cfg_factory(*over, "al.initial_pick=typical")
    typical = make_splits(cfg, samples)
    unreadable = [replace(s, mask=_Unreadable()) for s in samples]
    assert make_splits(cfg, unreadable) == typical  # no mask read, the same picks every time
    assert typical["test"] == random_splits["test"] and typical["val"] == random_splits["val"]
    assert len(typical["initial"]) == 3
    train = random_splits["initial"] + random_splits["pool"]
    assert sorted(typical["initial"] + typical["pool"]) == sorted(train)


def test_clasp_takes_turns_between_classes_and_its_noise_decays() -> None:
    # four units uncertain on background pixels, two less so on myelin pixels
    details = {f"bg{j}": np.array([10.0 - j, 0.1]) for j in range(4)}
    details |= {"my0": np.array([0.1, 3.0]), "my1": np.array([0.1, 2.0])}
    scores = {u: float(d.sum()) for u, d in details.items()}
    clasp = ClaSP(beta=1.0, growth=2.0, beta_max=64.0)
    assert [clasp.beta_at(r) for r in (0, 1, 3, 10)] == [1.0, 2.0, 8.0, 64.0]
    late = clasp.select(scores, 2, np.random.default_rng(0), details=details, round_index=10)
    assert late == ["bg0", "my0"]  # one per class, the top of each (entropy top-2: bg0, bg1)
    # round 0 is noisy: over seeds, other units than each class's top are drawn too
    early = Counter(
        u
        for seed in range(200)
        for u in clasp.select(scores, 2, np.random.default_rng(seed), details=details)
    )
    assert early["my1"] > 20 and early["bg1"] > 20
    plain = Counter(
        u
        for seed in range(200)
        for u in Entropy(sampling="power").select(scores, 2, np.random.default_rng(seed))
    )
    myelin = ("my0", "my1")
    assert sum(early[u] for u in myelin) > 150 > 60 > sum(plain[u] for u in myelin)
    fg_only = ClaSP(background=False).select(
        scores, 2, np.random.default_rng(0), details=details, round_index=10
    )
    assert fg_only == ["my0", "my1"]
    # unit_details: entropy summed over the pixels predicted as each class
    stats = fg_stats(0.3)
    stats.entropy[:] = 1.0
    assert list(clasp.unit_details(stats, (slice(0, 10), slice(0, 10)))) == [70.0, 30.0]


def test_bad_first_pick_settings_name_the_setting(cfg_factory, tmp_path) -> None:
    from axal.errors import ConfigError

    with pytest.raises(ConfigError, match="al.initial_pick='best' is not one of random, typical"):
        run(cfg_factory("al.initial_pick=best"), tmp_path / "a")
    with pytest.raises(ConfigError, match="strategy.stratify='mouse' is not one of none, subject"):
        run(cfg_factory("strategy=typiclust", "strategy.stratify=mouse"), tmp_path / "b")
    with pytest.raises(ConfigError, match="needs MC dropout"):
        run(
            cfg_factory("strategy=typiclust_then_bald_power", "model.dropout_placement=none"),
            tmp_path / "c",
        )
