"""End-to-end simulations: rounds, results.json contract, resume, reproducibility, bad input."""

from __future__ import annotations

import json

import pytest

from axal.data import DataError
from axal.errors import ConfigError
from axal.simulation import run
from tests.conftest import compose_cfg, real_data_root


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_two_round_simulation_writes_the_results_contract(cfg_factory, tmp_path):
    cfg = cfg_factory("strategy=mc_dropout")
    results = run(cfg, tmp_path)
    saved = _results(tmp_path)
    assert saved["finished"] is True
    assert (saved["dataset"], saved["task"], saved["strategy"], saved["seed"]) == (
        "synthetic",
        "myelin",
        "mc_dropout",
        0,
    )
    assert set(saved["splits"]) == {"test", "val", "initial", "pool"}
    assert len(saved["rounds"]) == 2
    r0, r1 = saved["rounds"]
    assert r0["n_labelled"] == 2 and r1["n_labelled"] == 3
    assert len(r0["selected"]) == 1 and r0["selected"][0] in saved["splits"]["pool"]
    assert r1["labelled"] == r0["labelled"] + r0["selected"]
    # every pool image got a score, and the pick is the best-scored one
    assert set(r0["scores"]) == set(saved["splits"]["pool"])
    assert r0["selected"][0] == max(r0["scores"], key=r0["scores"].get)
    assert r1["selected"] == []  # the last round labels nothing
    for r in saved["rounds"]:
        assert 0.0 <= r["test"]["dice"] <= 1.0
        assert r["train_loss"] > 0
        assert r["test"]["dice_axon"] is None
        assert r["train_seconds"] > 0
    assert r0["acquire_seconds"] > 0
    assert results["rounds"][-1]["test"] == r1["test"]
    assert (tmp_path / "checkpoints" / "round-1.ckpt").exists()
    assert not (tmp_path / "checkpoints" / "round-0.ckpt").exists()
    assert (tmp_path / "config.yaml").exists()
    rows = (tmp_path / "selection.csv").read_text().splitlines()
    assert rows[0] == "round,unit,image_id,x,y,width,height,subject,score"
    pick = r0["selected"][0]
    assert rows[1].startswith(f"0,{pick},{pick},0,0,128,128,sub-syn")
    # the budget in pixels: 2 then 3 of the pool's synthetic 128 x 128 images
    assert r0["labelled_pixels"] == 2 * 128 * 128 and r1["labelled_pixels"] == 3 * 128 * 128
    n_train = len(saved["splits"]["initial"]) + len(saved["splits"]["pool"])
    assert saved["pool_pixels"] == n_train * 128 * 128
    assert r1["labelled_fraction"] == pytest.approx(3 / n_train)
    assert r0["steps"] == 2 and r0["restarts"] == 0
    # uncertainty maps for the pick and the fixed pool images
    assert r0["uncertainty_maps"]
    assert all((tmp_path / p).exists() for p in r0["uncertainty_maps"])


def test_axonmyelin_task_reports_both_classes(cfg_factory, tmp_path):
    cfg = cfg_factory("task=axonmyelin", "strategy=random", "al.rounds=1")
    run(cfg, tmp_path)
    test = _results(tmp_path)["rounds"][0]["test"]
    assert test["dice_axon"] is not None and test["dice_myelin"] is not None
    assert test["dice"] == pytest.approx((test["dice_axon"] + test["dice_myelin"]) / 2)


def test_run_stops_when_the_pool_is_empty(cfg_factory, tmp_path):
    cfg = cfg_factory("strategy=random", "al.rounds=20", "al.per_round=3")
    saved = run(cfg, tmp_path)
    n_train = len(saved["splits"]["initial"]) + len(saved["splits"]["pool"])
    assert saved["finished"] and len(saved["rounds"]) < 20
    assert saved["rounds"][-1]["n_labelled"] == n_train
    assert saved["rounds"][-1]["selected"] == []


def test_same_seed_same_splits_and_selections(cfg_factory, tmp_path):
    a = run(cfg_factory("strategy=mc_dropout", "seed=3"), tmp_path / "a")
    b = run(cfg_factory("strategy=mc_dropout", "seed=3"), tmp_path / "b")
    assert a["splits"] == b["splits"]
    assert [r["selected"] for r in a["rounds"]] == [r["selected"] for r in b["rounds"]]
    assert a["rounds"][0]["scores"] == pytest.approx(b["rounds"][0]["scores"])
    c = run(cfg_factory("strategy=random", "seed=4", "al.rounds=1"), tmp_path / "c")
    assert c["splits"] != a["splits"]


def test_strategies_share_split_and_initial_set_for_a_seed(cfg_factory, tmp_path):
    a = run(cfg_factory("strategy=random", "seed=1", "al.rounds=1"), tmp_path / "a")
    b = run(cfg_factory("strategy=bald", "seed=1", "al.rounds=1"), tmp_path / "b")
    assert a["splits"] == b["splits"]
    # same initial weights and patches: round 0 is the same model for both strategies
    assert a["rounds"][0]["test"]["dice"] == pytest.approx(b["rounds"][0]["test"]["dice"])


def test_resume_continues_from_the_last_finished_round(cfg_factory, tmp_path, monkeypatch):
    import axal.simulation as simulation

    full = run(cfg_factory("strategy=mc_dropout", "al.rounds=3"), tmp_path / "full")

    # kill the run during round 2 (after round 1 finished): results.json keeps rounds 0-1
    real_save = simulation.atomic_write_json

    def crash_after_two_rounds(path, obj):
        real_save(path, obj)
        if obj["rounds"] and len(obj["rounds"]) == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(simulation, "atomic_write_json", crash_after_two_rounds)
    with pytest.raises(KeyboardInterrupt):
        run(cfg_factory("strategy=mc_dropout", "al.rounds=3"), tmp_path / "cut")
    monkeypatch.setattr(simulation, "atomic_write_json", real_save)
    partial = _results(tmp_path / "cut")
    assert len(partial["rounds"]) == 2 and partial["finished"] is False

    resumed = run(
        cfg_factory("strategy=mc_dropout", "al.rounds=3", f"resume={tmp_path / 'cut'}"),
        tmp_path / "cut",
    )
    assert resumed["finished"] is True
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    assert resumed["rounds"][:2] == partial["rounds"]  # nothing recomputed
    assert [r["labelled"] for r in resumed["rounds"]] == [r["labelled"] for r in full["rounds"]]
    got, want = resumed["rounds"][2]["test"], full["rounds"][2]["test"]
    assert got["dice"] == pytest.approx(want["dice"])
    assert got["per_subject"].keys() == want["per_subject"].keys()


def test_resume_refuses_a_different_experiment(cfg_factory, tmp_path):
    run(cfg_factory("strategy=random", "al.rounds=1"), tmp_path)
    with pytest.raises(ValueError, match="strategy"):
        run(cfg_factory("strategy=bald", "al.rounds=1", f"resume={tmp_path}"), tmp_path)
    with pytest.raises(ConfigError, match="resume=.*no such folder"):
        run(cfg_factory(f"resume={tmp_path / 'nothing'}"), tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()  # refused, not created


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("al.initial=50", "al.initial"),
        ("dataset.test_subjects=6", "dataset.test_subjects"),
        ("al.per_round=0", "al.per_round"),
        ("task=axons", "task"),
        ("model.dropout_placement=middle", "model.dropout_placement"),
        ("dataset.patch_size=50", "dataset.patch_size"),
    ],
)
def test_bad_settings_give_clear_errors(cfg_factory, tmp_path, override, message):
    with pytest.raises((ValueError, DataError), match=message):
        run(cfg_factory(override), tmp_path)


def test_folder_dataset_without_root_names_the_setting(tmp_path):
    cfg = compose_cfg(["dataset=folder", "logger=none"])
    with pytest.raises(Exception, match="dataset.root"):
        run(cfg, tmp_path)


def test_mc_dropout_without_dropout_is_refused(cfg_factory, tmp_path):
    with pytest.raises(ValueError, match="dropout"):
        run(cfg_factory("strategy=bald", "model.dropout_placement=none"), tmp_path)


@pytest.mark.skipif(real_data_root() is None, reason="real data not found (AXAL_DATA)")
def test_short_run_on_real_tem_data(tmp_path):
    cfg = compose_cfg(
        [
            "dataset=tem",
            f"dataset.root={real_data_root() / 'tem_mouse_corpuscallosum'}",
            "logger=csv",
            "strategy=mc_dropout",
            "trainer.steps=48",
            "trainer.progress=false",
            "dataset.pixel_size=0.00986",
            "dataset.patch_size=128",
            "model.module.patch_size=320",
            "model.module.lr=0.003",
            "al.rounds=2",
            "al.mc_samples=2",
        ]
    )
    saved = run(cfg, tmp_path)
    test_ids = saved["splits"]["test"]
    subjects = {i.split("_")[0] for i in test_ids}
    others = saved["splits"]["initial"] + saved["splits"]["pool"]
    assert subjects and not subjects & {i.split("_")[0] for i in others}
    assert all(i.endswith("_TEM") for i in others)
    assert len(saved["rounds"]) == 2 and saved["finished"]
    assert len(saved["rounds"][0]["scores"]) == len(saved["splits"]["pool"])
    # a few steps on 4 images already find myelin: the model learns on real data
    assert 0.3 < saved["rounds"][1]["test"]["dice"] <= 1.0
    assert (tmp_path / "csv" / "metrics.csv").exists()


def test_wandb_logger_runs_offline_without_a_key(cfg_factory, tmp_path, monkeypatch):
    from axal.tracking import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online" and wandb_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(ValueError, match="logger.mode"):
        wandb_mode("sometimes")
    run(cfg_factory("logger=wandb", "strategy=random", "al.rounds=1"), tmp_path)
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))  # the run's records, ready for `wandb sync`


def test_reinit_false_fine_tunes_the_previous_rounds_model(cfg_factory, tmp_path, monkeypatch):
    import torch

    loaded = []
    real_load = torch.load

    def spy(path, *args, **kwargs):
        loaded.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    run(cfg_factory("strategy=random", "al.reinit=false"), tmp_path / "ft")
    assert loaded == [str(tmp_path / "ft" / "checkpoints" / "round-0.ckpt")]
    loaded.clear()
    run(cfg_factory("strategy=random", "al.reinit=true"), tmp_path / "scratch")
    assert loaded == []  # retrained from scratch: no checkpoint read


@pytest.mark.parametrize(
    "strategy", ["entropy", "margin", "coreset", "hybrid", "bald_power", "mc_dropout"]
)
def test_every_strategy_config_runs_a_round_and_picks_from_the_pool(
    cfg_factory, tmp_path, strategy
):
    saved = run(
        cfg_factory(
            f"strategy={strategy}",
            "al.per_round=2",
            "dataset.n_images=8",
            "dataset.n_subjects=4",
            "dataset.test_subjects=1",
        ),
        tmp_path,
    )
    r0 = saved["rounds"][0]
    assert len(r0["selected"]) == 2 and len(set(r0["selected"])) == 2
    assert set(r0["selected"]) <= set(saved["splits"]["pool"])
    assert saved["rounds"][1]["labelled"] == r0["labelled"] + r0["selected"]
