"""Resume: the same experiment or a clear refusal; extend finished runs; keep every record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from axal.errors import ConfigError
from axal.rundir import compare_configs
from axal.simulation import run


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _files(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_resume_refuses_a_changed_per_round_and_names_it(cfg_factory, tmp_path):
    run(cfg_factory("al.rounds=1"), tmp_path)
    before = _files(tmp_path)
    with pytest.raises(ConfigError) as err:
        run(cfg_factory("al.rounds=1", "al.per_round=2", f"resume={tmp_path}"), tmp_path)
    msg = str(err.value)
    assert "al.per_round: 1 -> 2" in msg and f"resume={tmp_path}" in msg
    assert _files(tmp_path) == before  # results.json, config.yaml untouched; nothing added
    with pytest.raises(ConfigError, match=r"model.module.lr: 0.003 -> 0.1"):
        run(cfg_factory("al.rounds=1", "model.module.lr=0.1", f"resume={tmp_path}"), tmp_path)
    assert _files(tmp_path) == before


def test_resume_may_change_speed_and_logging_settings_but_not_shrink_rounds():
    recorded = {
        "al": {"rounds": 3, "per_round": 1, "tile_batch": 2},
        "trainer": {"lr": 1, "accelerator": "gpu"},
    }
    new = {
        "al": {"rounds": 5, "per_round": 1, "tile_batch": 8},
        "trainer": {"lr": 1, "accelerator": "cpu"},
    }
    new["logger"] = {"kind": "csv"}  # a new key of an allowed group
    changed = compare_configs(recorded, new)
    assert changed["al.rounds"] == [3, 5] and changed["al.tile_batch"] == [2, 8]
    assert changed["trainer.accelerator"] == ["gpu", "cpu"]  # a GPU run may go on on a CPU
    with pytest.raises(ConfigError, match=r"al.rounds: 3 -> 2"):
        compare_configs(recorded, {**new, "al": {**new["al"], "rounds": 2}})
    with pytest.raises(ConfigError, match=r"trainer.lr: 1 -> 2"):
        compare_configs(recorded, {**new, "trainer": {"lr": 2, "accelerator": "cpu"}})


def test_extending_a_finished_run_matches_a_longer_run(cfg_factory, tmp_path):
    longer = run(cfg_factory("strategy=mc_dropout", "al.rounds=3"), tmp_path / "longer")
    short = tmp_path / "short"
    run(cfg_factory("strategy=mc_dropout", "al.rounds=2", "logger=csv"), short)
    config_before = (short / "config.yaml").read_bytes()
    assert _results(short)["finished"] and _results(short)["rounds"][1]["selected"] == []

    extended = run(
        cfg_factory("strategy=mc_dropout", "al.rounds=3", "logger=csv", f"resume={short}"), short
    )
    assert extended["finished"] and [r["round"] for r in extended["rounds"]] == [0, 1, 2]
    # round 1's picks come from round 1's model, exactly as in the uninterrupted longer run
    assert [r["labelled"] for r in extended["rounds"]] == [r["labelled"] for r in longer["rounds"]]
    assert extended["rounds"][1]["selected"] == longer["rounds"][1]["selected"]
    got, want = extended["rounds"][2]["test"], longer["rounds"][2]["test"]
    assert got["dice"] == pytest.approx(want["dice"])
    for subject, scores in want["per_subject"].items():
        assert got["per_subject"][subject]["dice"] == pytest.approx(scores["dice"])
    # config.yaml is the run's first record; the resume's config is written beside it
    assert (short / "config.yaml").read_bytes() == config_before
    (beside,) = short.glob("config.resume-*.yaml")
    assert yaml.safe_load(beside.read_text())["al"]["rounds"] == 3
    saved = _results(short)
    assert saved["config"]["al"]["rounds"] == 3
    assert saved["resumes"][-1]["changed"]["al.rounds"] == [2, 3]
    assert saved["resumes"][-1]["config"] == beside.name
    # the CSV log keeps the earlier rounds' rows and appends the new one
    rows = (short / "csv" / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("round")
    assert [r.split(",")[column] for r in rows[1:]] == ["0", "1", "2"]


def test_a_run_records_its_machine_and_a_resume_records_its_own(cfg_factory, tmp_path, monkeypatch):
    """Runs of one config can differ across machines; the record says which machine ran what."""
    import torch

    from axal import environment

    for name in environment.ISA_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    run(cfg_factory("al.rounds=1"), tmp_path)
    first = _results(tmp_path)["environment"]
    # the instruction set torch's kernels run on, and no cap on it
    assert first["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert first["isa_settings"] == {}
    assert first["torch"] == torch.__version__ and first["lightning"]
    assert first["cpu"] == environment.cpu_model() and first["cpu"]
    assert first["torch_threads"] == torch.get_num_threads() and first["device"] == "cpu"
    monkeypatch.setattr(environment, "cpu_model", lambda: "the other lab's CPU")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # that lab caps oneDNN's instruction set
    run(cfg_factory("al.rounds=2", f"resume={tmp_path}"), tmp_path)
    saved = _results(tmp_path)
    assert saved["environment"] == first  # where the run started stays recorded
    assert saved["resumes"][-1]["from_round"] == 1
    assert saved["resumes"][-1]["environment"]["cpu"] == "the other lab's CPU"
    assert saved["resumes"][-1]["environment"]["isa_settings"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_resuming_a_finished_run_without_more_rounds_changes_nothing(cfg_factory, tmp_path):
    run(cfg_factory("al.rounds=1"), tmp_path)
    before = _files(tmp_path)
    again = run(cfg_factory("al.rounds=1", "trainer.num_threads=1", f"resume={tmp_path}"), tmp_path)
    assert again["finished"] and len(again["rounds"]) == 1
    assert _files(tmp_path) == before


def test_resume_refuses_a_folder_without_results(cfg_factory, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no results.json"):
        run(cfg_factory(f"resume={tmp_path / 'empty'}"), tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable"):
        run(cfg_factory(f"resume={tmp_path / 'bad'}"), tmp_path / "bad")
    assert (tmp_path / "bad" / "results.json").read_text() == "{not json"


def test_a_failed_checkpoint_write_leaves_the_good_one_in_place(tmp_path):
    """A write that fails midway (a full disk) never replaces a good checkpoint."""
    from axal.checkpoint import save_checkpoint

    class FullDisk:
        def save_checkpoint(self, path):
            Path(path).write_bytes(b"trunc")
            raise OSError(28, "No space left on device")

    good = tmp_path / "round-0.ckpt"
    good.write_bytes(b"good checkpoint")
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(FullDisk(), good)
    assert good.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["round-0.ckpt"]
