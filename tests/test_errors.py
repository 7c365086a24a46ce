"""What a user sees: one paragraph for bad input, in the terminal and in run.log; --help."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
ENV.pop("HYDRA_FULL_ERROR", None)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_data_is_one_paragraph_on_stderr_and_in_run_log(tmp_path):
    missing = tmp_path / "no_such_data"
    proc = _run(
        "dataset=tem", f"dataset.root={missing}", "logger=none", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    paragraph = proc.stderr.strip()
    assert paragraph.startswith("Error: dataset.root=") and "\n\n" not in paragraph
    assert str(missing) in paragraph and "HYDRA_FULL_ERROR=1" in paragraph
    log = (tmp_path / "run.log").read_text()
    assert "ERROR" in log and f"dataset.root={missing}" in log


def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = _run(
        "dataset=tem",
        f"dataset.root={tmp_path / 'nothing'}",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
        env=dict(ENV, HYDRA_FULL_ERROR="1"),
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr


def test_bad_setting_names_it_without_a_traceback(tmp_path):
    proc = _run("dataset=synthetic", "al.per_round=0", "logger=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "al.per_round=0 must be a positive integer" in proc.stderr


def test_help_says_what_the_program_does_and_where_the_data_comes_from():
    proc = _run("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "active learning" in text and "electron-microscopy" in text
    assert "$AXAL_DATA" in text and "downloads" in text and "~/.cache/axal" in text
    assert "dataset: folder, sem, synthetic, tem" in text  # Hydra's list of config groups
