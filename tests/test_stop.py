"""Stopping a run by SIGTERM (SLURM, ``timeout``) or SIGINT (Ctrl-C): non-zero exit, the resume
command printed, results.json kept unfinished, and the run resumes from that command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST, ROOT

LONG = [o for o in FAST if not o.startswith("trainer.steps")] + ["trainer.steps=100000"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_resume_command(tmp_path, signum):
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(
        [sys.executable, "run.py", *LONG, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = run_dir / "results.json"
    for _ in range(600):  # training has begun once results.json exists
        if results.is_file() or proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(2.0)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith("python run.py")][-1]
    assert f"resume={run_dir}" in line
    assert "dataset=synthetic" in line
    assert json.loads(results.read_text())["finished"] is False
    assert err.count("Detected KeyboardInterrupt") == 0
