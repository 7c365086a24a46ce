"""A sweep on a real SLURM (one node, on this machine): interrupted mid-run, it ends as a local one.

One job is requeued by ``scontrol requeue`` (SIGTERM), the other gets USR2 (what SLURM sends
before a time limit or a signalling preemption: submitit checkpoints and requeues it); both
resume from their last finished round with the picks and metrics of a local sweep.

The cluster (:mod:`tests.slurm_cluster`) needs root and Debian's ``slurm-wlm`` and ``munge``.
Where it cannot start, the test skips with the reason, except under ``AXAL_REQUIRE_SLURM=1``
(set by ``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from axal.rundir import flatten
from tests.conftest import ROOT
from tests.slurm_cluster import LocalSlurm, SlurmUnavailable

REQUIRED = os.environ.get("AXAL_REQUIRE_SLURM") == "1"
ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
STRATEGIES = ("random", "bald")
ROUNDS = 3


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"AXAL_REQUIRE_SLURM=1 but SLURM cannot run here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        import submitit  # noqa: F401
    except ImportError:
        _unavailable("submitit is not installed (pip install -e '.[slurm]')")
    if not sys.platform.startswith("linux"):
        _unavailable("the test cluster runs on Linux only")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        _unavailable(f"SLURM could not be started: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _sweep(sweep_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "sweep.py",
        "experiment=smoke",
        f"sweep.dir={sweep_dir}",
        f"sweep.grid.strategy=[{','.join(STRATEGIES)}]",
        "sweep.grid.seed=[0]",
        f"al.rounds={ROUNDS}",
        "sweep.threads=1",
        *extra,
    ]


def _results(job: Path) -> dict | None:
    try:
        return json.loads((job / "results.json").read_text())
    except (OSError, ValueError):
        return None


def _metrics(record: dict) -> dict:
    """A round's test metrics (per subject too) and training loss, as flat numbers."""
    flat = flatten({"test": record["test"], "train_loss": record["train_loss"]})
    return {k: v for k, v in flat.items() if v is not None}


def _scontrol(cluster: LocalSlurm, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], env=cluster.env, capture_output=True, text=True)


# how each job is interrupted: SLURM's requeue (SIGTERM, as PreemptMode=REQUEUE does), then the
# signal SLURM sends before a time limit or a signalling preemption (submitit checkpoints)
INTERRUPTIONS = (("scontrol", "requeue"), ("scancel", "--signal=USR2"))


def _interrupt_mid_run(
    cluster: LocalSlurm, sweep_dir: Path, proc: subprocess.Popen
) -> dict[str, str]:
    """Interrupt each job once its round 0 is recorded and later rounds are still to come, one
    way each (:data:`INTERRUPTIONS`); return ``{task id: how}``. SLURM holds a requeued job
    for two minutes: each is released at once."""
    done: dict[str, str] = {}
    deadline = time.monotonic() + 240
    while len(done) < len(INTERRUPTIONS) and time.monotonic() < deadline and proc.poll() is None:
        record = sweep_dir / "slurm" / "jobs.json"
        tasks = json.loads(record.read_text()) if record.exists() else {}
        for run_dir, task in tasks.items():
            results = _results(Path(run_dir))
            if task in done or not results or not results["rounds"] or results["finished"]:
                continue
            how = INTERRUPTIONS[len(done)]
            sent = subprocess.run([*how, task], env=cluster.env, capture_output=True, text=True)
            assert sent.returncode == 0, sent.stderr
            done[task] = " ".join(how)
            if len(done) == len(INTERRUPTIONS):
                break
        time.sleep(0.1)
    if len(done) < len(INTERRUPTIONS):
        out = proc.stdout.read() if proc.poll() is not None else ""
        raise AssertionError(f"only {done} caught between round 0 and the end:\n{out[-3000:]}")
    for task in done:
        _release(cluster, task)
    return done


def _release(cluster: LocalSlurm, task: str) -> None:
    """Once the requeued ``task`` is pending again, let it start now; return when it has.

    Not in the second its last attempt ended: slurmd revokes that attempt's credential at
    one-second resolution, and a relaunch in the same second dies as "Job credential revoked"
    (a real cluster's two-minute hold never meets it)."""
    deadline = time.monotonic() + 60
    pending = False
    while time.monotonic() < deadline:
        info = _scontrol(cluster, "show", "job", task).stdout
        if "JobState=PENDING" in info:
            if not pending:
                time.sleep(2.0)
            pending = True
            _scontrol(cluster, "update", f"JobId={task}", "StartTime=now")
        elif pending:
            return  # running again (or already done)
        time.sleep(0.3)
    raise AssertionError(f"requeued job {task} did not start again:\n{info}")


def test_a_slurm_sweep_interrupted_mid_run_resumes_and_matches_a_local_sweep(slurm, tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    env = dict(slurm.env, **{k: ENV[k] for k in ("WANDB_MODE", "OMP_NUM_THREADS")})
    args = _sweep(
        on_slurm,
        "sweep.launcher=slurm",
        "sweep.slurm.cpus_per_task=1",
        "sweep.slurm.time=10",  # so short that submitit counts the USR2 as a time-out
        "sweep.slurm.poll=1",
    )
    # submit and return; then the same command waits for the array instead of resubmitting it
    submit = subprocess.run(
        [*args, "sweep.slurm.wait=false"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "submitted 2 job(s) as SLURM array" in submit.stdout
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reference = subprocess.Popen(
        _sweep(local), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        interrupted = _interrupt_mid_run(slurm, on_slurm, proc)
        out, _ = proc.communicate(timeout=480)
        local_out = reference.communicate(timeout=480)[0].decode(errors="replace")
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 0, out[-4000:]
    assert reference.returncode == 0, local_out[-4000:]
    tasks = json.loads((on_slurm / "slurm" / "jobs.json").read_text())
    assert set(interrupted) == set(tasks.values())
    for strategy in STRATEGIES:
        job = on_slurm / f"strategy={strategy}" / "seed0"
        got, want = _results(job), _results(local / job.relative_to(on_slurm))
        task = tasks[str(job)]
        assert "Restarts=1" in _scontrol(slurm, "show", "job", task).stdout, interrupted[task]
        assert got and got["finished"] and len(got["rounds"]) == ROUNDS, out[-3000:]
        assert [r["selected"] for r in got["rounds"]] == [r["selected"] for r in want["rounds"]]
        assert [r["labelled"] for r in got["rounds"]] == [r["labelled"] for r in want["rounds"]]
        for mine, theirs in zip(got["rounds"], want["rounds"]):
            assert _metrics(mine) == pytest.approx(_metrics(theirs), rel=1e-6, abs=1e-9)
        # continued from its last finished round, not redone from scratch
        (resume,) = got["resumes"]
        assert 1 <= resume["from_round"] < ROUNDS, interrupted[task]
        if "USR2" in interrupted[task]:  # submitit's handler checkpointed and requeued it
            logs = "".join(p.read_text() for p in (on_slurm / "slurm").rglob(f"{task}_*log.*"))
            assert "Calling checkpoint method" in logs and "stopped for requeue" in logs, logs
    assert "2 job(s) already queued or running" in out and "submitted" not in out
    assert (on_slurm / "report" / "report.html").exists()
    assert "COMPLETED" in out


def test_under_slurm_lightning_neither_detects_slurm_nor_takes_its_signals(monkeypatch):
    """Lightning's SLURMEnvironment would requeue on USR1 itself and can end the job early;
    under SLURM every axal Trainer runs with a plain LightningEnvironment instead."""
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from axal.training import make_trainer
    from tests.conftest import compose_cfg

    for key, value in {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "axal"}.items():
        monkeypatch.setenv(key, value)
    plain = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert isinstance(plain._accelerator_connector.cluster_environment, SLURMEnvironment)

    trainer = make_trainer(compose_cfg(["experiment=smoke"]), 1, [], has_val=False)
    assert isinstance(trainer._accelerator_connector.cluster_environment, LightningEnvironment)
    before = signal.getsignal(signal.SIGUSR1)
    trainer._signal_connector.register_signal_handlers()
    try:
        assert signal.getsignal(signal.SIGUSR1) is before  # no Lightning requeue handler
    finally:
        trainer._signal_connector.teardown()


def test_a_run_started_by_submitit_leaves_the_preemption_signal_to_its_parent():
    """SLURM sends USR2 to every process of a job; run.py must survive it (submitit, in its
    parent, checkpoints and stops it), and still stop on SIGTERM."""
    code = (
        "import os, signal\n"
        "from axal.interrupt import Interrupted, stop_on_signals\n"
        "stop_on_signals()\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "except Interrupted as err:\n"
        "    print('alive after USR2, stopped by', err)\n"
    )
    env = dict(ENV, AXAL_SUBMITIT_SIGNAL="USR2")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "alive after USR2, stopped by SIGTERM" in proc.stdout
    without = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert without.returncode == -signal.SIGUSR2  # outside submitit USR2 is not ours to ignore


def test_the_array_lists_one_job_per_seed_first(tmp_path):
    """Array tasks start in index order: a seed's second strategy placed right after its first
    would wait for that job's round 0 while another seed's job could work."""
    pytest.importorskip("submitit")
    from axal.slurm import _ordered
    from axal.sweep import compose_sweep, expand

    overrides = [
        "experiment=smoke",
        f"sweep.dir={tmp_path}",
        "sweep.grid.strategy=[random,bald,entropy]",
        "sweep.grid.seed=[0,1]",
    ]
    jobs = expand(compose_sweep(overrides), [])
    order = [(j.run_dir.parent.name, j.run_dir.name) for j in _ordered(jobs)]
    assert [seed for _, seed in order] == ["seed0", "seed1"] * 3
    assert sorted(order) == sorted((j.run_dir.parent.name, j.run_dir.name) for j in jobs)
