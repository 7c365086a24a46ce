"""Run folders: one per run, locked while in use, never shared by two runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from axal.rundir import LOCK, RunFolderInUse, RunLock, lock_holder, register_resolvers
from axal.simulation import run
from tests.conftest import CONF, FAST, ROOT

ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
TINY = FAST + ["al.rounds=1"]


def _run_dir_of(overrides: list[str], now: str | None = None) -> str:
    """``hydra.run.dir`` as run.py resolves it (``now``: a frozen clock)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if now:
            OmegaConf.register_new_resolver("now", lambda pattern: now, replace=True)
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.run.dir"))


def test_two_runs_started_in_the_same_second_get_their_own_folders():
    from hydra.core.utils import setup_globals

    try:  # the clock reads the same for both: only the suffix tells the runs apart
        first = _run_dir_of(["seed=0"], now="2026-01-01_00-00-00")
        second = _run_dir_of(["seed=0"], now="2026-01-01_00-00-00")
    finally:
        setup_globals()  # Hydra's own `now` again
    assert first != second
    assert first.startswith("outputs/tem/random/seed0/2026-01-01_00-00-00_")
    assert second.startswith("outputs/tem/random/seed0/2026-01-01_00-00-00_")


def test_resume_continues_in_its_own_folder_and_a_missing_one_is_not_created(tmp_path):
    assert _run_dir_of([f"resume={tmp_path}"]) == str(tmp_path)  # run.log appends there
    missing = tmp_path / "gone"
    assert _run_dir_of([f"resume={missing}"]).startswith("outputs/tem/random/seed0/")
    assert not missing.exists()


def test_two_runs_launched_together_keep_their_own_files(tmp_path):
    """The issue's case: same seed, different al.initial, started at once, same template."""
    args = [sys.executable, str(ROOT / "run.py"), *TINY, "trainer.num_threads=1"]
    procs = [
        subprocess.Popen(
            [*args, f"al.initial={k}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in (2, 3)
    ]
    outputs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    folders = sorted(p.parent for p in tmp_path.glob("outputs/synthetic/random/seed0/*/run.log"))
    assert len(folders) == 2
    initial = set()
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text())
        assert results["config"]["al"]["initial"] == config["al"]["initial"]
        assert len(results["splits"]["initial"]) == config["al"]["initial"]
        assert (folder / "run.log").read_text().count("round 0 |") == 1  # not interleaved
        assert not (folder / LOCK).exists()  # released at the end
        initial.add(config["al"]["initial"])
    assert initial == {2, 3}


def test_a_folder_in_use_is_refused_and_left_alone(cfg_factory, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with RunLock(tmp_path):
        holder = lock_holder(tmp_path)
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunFolderInUse, match=f"in use by another run.*pid {os.getpid()}"):
            run(cfg_factory("al.rounds=1"), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", LOCK]
    assert lock_holder(tmp_path) is None and not (tmp_path / LOCK).exists()


def test_a_folder_in_use_is_refused_by_run_py_with_one_paragraph(tmp_path):
    with RunLock(tmp_path):
        proc = subprocess.run(
            [sys.executable, "run.py", *TINY, f"hydra.run.dir={tmp_path}"],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1
    assert f"in use by another run (pid {os.getpid()}" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "config.yaml").exists()


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(cfg_factory, tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": "h", "started": "t"}))
    with caplog.at_level(logging.WARNING, logger="axal"):
        saved = run(cfg_factory("al.rounds=1"), tmp_path)
    assert saved["finished"]
    assert "taking over the lock" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert not (tmp_path / LOCK).exists()


def test_a_new_run_never_overwrites_a_finished_one(cfg_factory, tmp_path):
    run(cfg_factory("al.rounds=1"), tmp_path)
    before = (tmp_path / "results.json").read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*resume="):
        run(cfg_factory("al.rounds=1", "seed=1"), tmp_path)
    assert (tmp_path / "results.json").read_bytes() == before


def test_the_lock_names_its_holder(tmp_path):
    with RunLock(tmp_path):
        info = json.loads((tmp_path / LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] and info["started"]
        with pytest.raises(RunFolderInUse):
            RunLock(tmp_path).acquire()
    assert not Path(tmp_path / LOCK).exists()
