"""Round 0 trained once per seed and shared by the strategies of a sweep (axal.first_round)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

import axal.rounds
from axal.first_round import MODEL, RECORD, entry_dir, shared_fit
from axal.rundir import RunLock
from axal.simulation import run
from axal.sweep import ROOT, Job, compose_sweep, expand, next_job
from tests.conftest import compose_cfg


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _count_training(monkeypatch) -> list[int]:
    """The steps of every round the loop trains (fit_round calls)."""
    calls: list[int] = []
    real = axal.rounds.fit_round

    def counting(cfg, dm, make_model, seed, steps, *args, **kwargs):
        calls.append(steps)
        return real(cfg, dm, make_model, seed, steps, *args, **kwargs)

    monkeypatch.setattr(axal.rounds, "fit_round", counting)
    return calls


def test_a_strategy_loading_the_shared_round_0_gets_the_results_of_training_it(
    cfg_factory, tmp_path, monkeypatch
):
    fast = ["trainer.steps=4", "trainer.finetune_steps=2"]
    alone = run(cfg_factory("strategy=bald", *fast), tmp_path / "alone")
    cache = f"al.first_round_cache={tmp_path / 'shared'}"
    first = run(cfg_factory("strategy=random", cache, *fast), tmp_path / "random")
    calls = _count_training(monkeypatch)
    shared = run(cfg_factory("strategy=bald", cache, *fast), tmp_path / "bald")

    assert calls == [2]  # only round 1 (fine-tuning) trained; round 0 was loaded
    stored = first["rounds"][0]["shared_first_round"]
    assert stored["trained_here"] is True
    loaded = shared["rounds"][0]["shared_first_round"]
    assert loaded["trained_here"] is False and loaded["entry"] == stored["entry"]
    assert loaded["trained_by"] == str(tmp_path / "random")
    assert "shared_first_round" not in shared["rounds"][1]
    for mine, theirs in zip(shared["rounds"], alone["rounds"], strict=True):
        for key in ("test", "train_loss", "selected", "scores", "labelled", "steps", "restarts"):
            assert mine[key] == theirs[key], key
    assert _results(tmp_path / "bald")["rounds"] == shared["rounds"]


def test_runs_that_train_round_0_differently_never_share_an_entry(tmp_path):
    splits = {"test": ["a"], "val": ["b"], "initial": ["c"], "pool": ["d", "e"]}

    def entry(*overrides: str, splits: dict = splits) -> Path:
        cfg = compose_cfg(["dataset=synthetic", *overrides])
        from omegaconf import OmegaConf

        return entry_dir(tmp_path, OmegaConf.to_container(cfg, resolve=True), splits)

    base = entry()
    # the strategy, its display label, logging and speed settings leave round 0 unchanged
    for same in ("strategy=bald", "label=x", "logger=none", "trainer.num_threads=3", "al.rounds=4"):
        assert entry(same) == base, same
    for other in ("seed=1", "trainer.steps=7", "model=tiny", "model.dropout_rate=0.3"):
        assert entry(other) != base, other
    assert entry(splits={**splits, "initial": ["d"], "pool": ["c", "e"]}) != base


def test_a_run_waits_for_the_round_0_another_run_is_training(tmp_path):
    entry = tmp_path / "seed0-key"
    entry.mkdir()
    other = RunLock(entry).acquire()  # another run is training this round 0
    got: dict = {}

    def second_run() -> None:
        def train():
            raise AssertionError("trained a round 0 that another run was training")

        got["fit"], got["info"] = shared_fit(
            entry,
            train,
            restore=lambda path: ("model from", path.name),
            trainer=lambda steps: ("trainer for", steps),
            run_dir=tmp_path / "second",
            poll=0.02,
        )

    waiting = threading.Thread(target=second_run)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()  # still waiting: nothing stored yet
    (entry / MODEL).write_bytes(b"weights")
    (entry / RECORD).write_text(json.dumps({"steps": 5, "train_loss": 0.3, "trained_by": "x"}))
    other.release()
    waiting.join(5)
    assert got["fit"].model == ("model from", MODEL)
    assert got["fit"].trainer == ("trainer for", 5) and got["fit"].train_loss == 0.3
    assert got["info"]["trained_here"] is False and got["info"]["trained_by"] == "x"


def test_a_damaged_entry_is_trained_again_by_the_run_that_finds_it(tmp_path, caplog):
    entry = tmp_path / "seed0-key"
    entry.mkdir()
    (entry / RECORD).write_text("{not json")
    fit, info = shared_fit(
        entry,
        train=lambda: "trained here",
        restore=lambda path: pytest.fail("restored a damaged entry"),
        trainer=lambda steps: None,
        run_dir=tmp_path,
    )
    assert fit == "trained here" and info["trained_here"] and info["entry_unreadable"]
    assert str(entry) in caplog.text and "unreadable" in caplog.text


def test_sweep_starts_another_seeds_job_rather_than_one_that_would_wait_for_round_0():
    jobs = {
        (st, s): Job([f"seed={s}", f"strategy={st}"], Path(f"{st}/seed{s}"))
        for s in range(3)
        for st in ("random", "bald", "full")
    }
    queue = list(jobs.values())  # seeds outermost, as expand() orders them
    assert next_job(queue, []) is jobs["random", 0]
    # random seed 0 trains round 0: bald and full seed 0 would wait for it; seed 1 would not
    rest = queue[1:]
    assert next_job(rest, [jobs["random", 0]]) is jobs["random", 1]
    assert next_job(rest[3:], [jobs["random", 0], jobs["random", 1]]) is jobs["random", 2]
    # every queued job has a sibling running: the first goes (a core must not stay idle)
    assert next_job([jobs["bald", 0], jobs["full", 0]], [jobs["random", 0]]) is jobs["bald", 0]


def test_a_sweeps_jobs_share_round_0_in_its_folder_unless_told_not_to():
    cfg = compose_sweep(["experiment=sem_tile"])
    jobs = expand(cfg, [])
    cache = f"al.first_round_cache='{ROOT / cfg.sweep.dir / 'first_rounds'}'"
    assert all(cache in j.overrides for j in jobs)
    # a follow-on arm borrows another study's round 0s (a path relative to the project)
    lent = compose_sweep(["experiment=sem_tile", "sweep.first_rounds=results/runs/x/first_rounds"])
    lent_cache = f"al.first_round_cache='{ROOT / 'results/runs/x/first_rounds'}'"
    assert all(lent_cache in j.overrides for j in expand(lent, []))
    off = compose_sweep(["experiment=sem_tile", "sweep.share_first_round=false"])
    assert not any("first_round_cache" in o for j in expand(off, []) for o in j.overrides)


def test_an_edited_mask_changes_the_round_0_key(tmp_path):
    """The key covers the pixels trained on: one edited mask pixel is a new entry, an edit
    to an image round 0 never sees is not."""
    from axal.data import make_synthetic
    from axal.first_round import data_digest
    from axal.pools import ActiveDataModule

    splits = {"test": ["s0"], "val": ["s1"], "initial": ["s2"], "pool": ["s3"]}

    def key(samples) -> Path:
        dm = ActiveDataModule(samples, splits, task="myelin", patch_size=32, steps=1)
        return entry_dir(tmp_path, {"seed": 0}, splits, data_digest(dm))

    def samples():
        out = make_synthetic(n_images=4, size=48, n_subjects=4, seed=0)
        return [replace(s, id=f"s{j}") for j, s in enumerate(out)]

    base = key(samples())
    assert key(samples()) == base
    edited = samples()
    edited[2].mask[5, 5] = 1 - edited[2].mask[5, 5]
    assert key(edited) != base
    unseen = samples()
    unseen[3].mask[5, 5] = 1 - unseen[3].mask[5, 5]
    assert key(unseen) == base


def test_replicates_of_random_share_round_0_and_draw_other_picks(cfg_factory, tmp_path):
    """al.replicate=1 is another draw of random for the same seed: it loads the round 0 that
    replicate 0 trained (the same model, the same test record), then picks other tiles."""
    common = ["strategy=random", "al.rounds=3", "trainer.steps=4", "trainer.finetune_steps=2"]
    cache = f"al.first_round_cache={tmp_path / 'shared'}"
    first = run(cfg_factory(*common, cache), tmp_path / "rep0")
    second = run(cfg_factory(*common, cache, "al.replicate=1"), tmp_path / "rep1")
    again = run(cfg_factory(*common, "al.replicate=1"), tmp_path / "rep1-alone")

    assert (first["replicate"], second["replicate"]) == (0, 1)
    assert first["splits"] == second["splits"]
    r0, r0b = first["rounds"][0], second["rounds"][0]
    assert r0["shared_first_round"]["trained_here"] is True
    assert r0b["shared_first_round"]["trained_here"] is False
    assert r0b["shared_first_round"]["entry"] == r0["shared_first_round"]["entry"]
    for key in ("test", "train_loss", "labelled", "steps"):
        assert r0b[key] == r0[key], key
    # later picks differ, and are the replicate's own (the same without the cache)
    picks = [r["selected"] for r in first["rounds"]]
    picks_b = [r["selected"] for r in second["rounds"]]
    assert picks != picks_b
    assert picks_b == [r["selected"] for r in again["rounds"]]


def test_a_full_data_replicate_trains_from_another_seed(cfg_factory, tmp_path):
    """strategy=full has no picks: its replicate is another training seed on the same split."""
    a = run(cfg_factory("strategy=full", "al.rounds=1"), tmp_path / "full0")
    b = run(cfg_factory("strategy=full", "al.rounds=1", "al.replicate=1"), tmp_path / "full1")
    assert a["splits"] == b["splits"]
    assert a["rounds"][0]["seed"] != b["rounds"][0]["seed"]
    assert a["rounds"][0]["train_loss"] != b["rounds"][0]["train_loss"]


def test_a_negative_replicate_is_refused_naming_the_setting(cfg_factory, tmp_path):
    from axal.errors import ConfigError

    with pytest.raises(ConfigError, match="al.replicate=-1"):
        run(cfg_factory("al.replicate=-1"), tmp_path / "bad")
