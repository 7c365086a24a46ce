"""A sweep's jobs: they die with the sweep, never run twice at once, never lose a record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from axal.rundir import LOCK, RunLock, lock_holder
from tests.conftest import ROOT

ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")


def _sweep_args(sweep_dir: Path, rounds: int = 1) -> list[str]:
    return [
        sys.executable,
        "sweep.py",
        "experiment=smoke",
        f"sweep.dir={sweep_dir}",
        "sweep.grid.strategy=[random]",
        "sweep.grid.seed=[0]",
        f"al.rounds={rounds}",
        "sweep.threads=1",  # tiny jobs; 2 spin-waiting threads crawl on a shared machine
    ]


def _job(sweep_dir: Path) -> Path:
    return sweep_dir / "strategy=random" / "seed0"


def _alive(pid: int) -> bool:
    """Running, and not a zombie (a leader thread may be a zombie while others still exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _finished(job: Path) -> bool:
    path = job / "results.json"
    return path.exists() and json.loads(path.read_text()).get("finished", False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_killing_the_sweep_mid_job_stops_the_job(tmp_path):
    job = _job(tmp_path)
    proc = subprocess.Popen(
        _sweep_args(tmp_path, rounds=3),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # the job has started its run once it holds its folder's lock
        _wait_for(lambda: (lock_holder(job) or {}).get("pid"), 300, "the job to start")
        pid = lock_holder(job)["pid"]
        os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as `kill -9 <sweep pid>` does
        proc.wait()
        _wait_for(lambda: not _alive(pid), 30, f"job pid {pid} to die with its sweep")
        # the kernel frees the lock once the job's last thread is gone: nobody writes any more
        _wait_for(lambda: lock_holder(job) is None, 30, "the job's lock to be released")
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if _alive(proc.pid) else None
    assert not _finished(job)
    stamp = {p: p.stat().st_mtime_ns for p in job.rglob("*") if p.is_file()}
    time.sleep(1.0)
    assert stamp == {p: p.stat().st_mtime_ns for p in job.rglob("*") if p.is_file()}

    again = subprocess.run(
        _sweep_args(tmp_path, rounds=3), cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert _finished(job)
    assert not (job / LOCK).exists()


def test_an_unreadable_results_json_is_moved_aside_and_reported(tmp_path):
    job = _job(tmp_path)
    job.mkdir(parents=True)
    (job / "results.json").write_text('{"rounds": [{"round": 0, "test": {"di')  # cut short
    proc = subprocess.run(_sweep_args(tmp_path), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (job / "results.json.bad").read_text() == '{"rounds": [{"round": 0, "test": {"di'
    assert "unreadable" in proc.stderr and "results.json.bad" in proc.stderr
    assert _finished(job)  # the job ran again, beside the kept record


def test_a_sweep_waits_for_a_live_job_in_its_folder(tmp_path):
    job = _job(tmp_path)
    job.mkdir(parents=True)
    out = tmp_path / "sweep.out"
    with RunLock(job), out.open("w") as fh:  # another sweep's job, still running
        proc = subprocess.Popen(
            _sweep_args(tmp_path), cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT
        )
        try:
            _wait_for(lambda: "waiting for" in out.read_text(), 120, "the sweep to wait")
            assert f"pid {os.getpid()}" in out.read_text()
            time.sleep(1.0)
            assert proc.poll() is None and not (job / "results.json").exists()
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(timeout=600) == 0, out.read_text()[-3000:]
    assert _finished(job)
