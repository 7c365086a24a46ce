"""A sweep's jobs as one SLURM job array, submitted through submitit (``sweep.launcher=slurm``).

Only how a job starts changes: each array task runs :func:`axal.sweep.run_job` (``run.py`` in a
subprocess, the job's fixed folder as ``hydra.run.dir``, ``resume=`` when it holds finished
rounds), so folders, skipping, resume and the shared round 0 (``<sweep.dir>/first_rounds``,
on the disk every node mounts) are those of a local sweep.

Stopping and requeueing belong to submitit and SLURM, never to Lightning:

- Near its time limit, or when preempted with a signal, a job gets USR2 (submitit's
  ``--signal=USR2@90``). submitit's handler, in the task's process, calls
  :meth:`SweepTask.checkpoint`: it stops ``run.py`` with SIGTERM (the round in progress is
  dropped; results.json keeps the finished ones) and hands submitit the same task to requeue.
  ``run.py`` ignores USR2 itself (``AXAL_SUBMITIT_SIGNAL``), so that its parent's handler runs.
- ``scontrol requeue``, preemption by requeue and ``scancel`` send SIGTERM: ``run.py`` stops
  as on Ctrl-C, and a requeued task resumes from the last finished round.
- Lightning neither requeues nor stops early on SLURM's signals: under SLURM every Trainer
  gets ``plugins=[LightningEnvironment()]`` (:func:`axal.training.make_trainer`).

``sweep.py`` records the array's task ids in ``<sweep.dir>/slurm/jobs.json``; a rerun waits for
tasks still queued or running instead of submitting them twice, then writes the report.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig, OmegaConf

from axal.atomic import atomic_write_json
from axal.errors import ConfigError
from axal.interrupt import SIGNAL_ENV
from axal.sweep import Job, job_state, run_job, seed_set

# squeue states of a task that has not ended (requeued tasks pass through several)
ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "COMPLETING",
    "CONFIGURING",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "SUSPENDED",
    "SPECIAL_EXIT",
}
STOP_WAIT_S = 60.0  # how long checkpoint() gives run.py to stop after SIGTERM


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it (its Popen.wait still will)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


class SweepTask(submitit.helpers.Checkpointable):
    """One array task: run the job (or resume it) in its fixed folder.

    :meth:`checkpoint` is what submitit calls on USR2 (time limit, preemption): the task's state
    is its folder, so it stops the run and returns itself, unchanged, to be requeued.
    """

    def __init__(self, job: Job, threads: int) -> None:
        self.job = job
        self.threads = threads

    def __call__(self) -> str:
        env = {SIGNAL_ENV: submitit.JobEnvironment._usr_sig().name}
        job = run_job(self.job, self.threads, env=env)
        if job.status in ("done", "skipped"):
            return job.status
        code = job.extra.get("returncode")
        by_signal = code is not None and (code < 0 or code in (128 + signal.SIGTERM, 130))
        if job.status == "stopped" or by_signal:  # SLURM's SIGTERM (requeue, cancel) ends us too
            raise RuntimeError(f"{job.run_dir}: stopped by a signal; results.json keeps its rounds")
        raise RuntimeError(f"{job.run_dir}: the run failed; see {job.log_path}")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        from axal.sweep import _live, _live_lock

        with _live_lock:
            procs = list(_live)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in procs:
            while not _exited(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _exited(proc.pid):
                proc.kill()
        print(f"sweep: {self.job.run_dir} stopped for requeue", file=sys.stderr, flush=True)
        return super().checkpoint(*args, **kwargs)


def _executor(cfg: DictConfig, folder: Path) -> submitit.AutoExecutor:
    s = cfg.sweep.slurm
    root = Path(__file__).resolve().parents[1]
    setup = [f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}", *list(s.get("setup") or [])]
    extra = s.get("additional")
    additional = {"requeue": True, **(OmegaConf.to_container(extra) if extra else {})}
    params: dict[str, Any] = {
        "name": f"axal-{Path(str(cfg.sweep.dir)).name}",
        "timeout_min": int(s.time),
        "cpus_per_task": int(s.cpus_per_task),
        "slurm_array_parallelism": int(s.array_parallelism),
        "slurm_setup": setup,
        "slurm_additional_parameters": additional,
    }
    if s.get("partition"):
        params["slurm_partition"] = str(s.partition)
    if s.get("gpus_per_node"):
        params["gpus_per_node"] = int(s.gpus_per_node)
    if s.get("mem"):
        params["slurm_mem"] = str(s.mem)
    executor = submitit.AutoExecutor(
        folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=int(s.max_num_timeout)
    )
    executor.update_parameters(**params)
    return executor


def _queue_states(ids: set[str]) -> dict[str, str] | None:
    """``{task id: state}`` of the given tasks still known to squeue; None if squeue failed."""
    if not ids:
        return {}
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"sweep: squeue failed ({proc.stderr.strip()}); retrying", file=sys.stderr)
        return None
    states = {}
    for line in proc.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task in ids:
            states[task] = state
    return states


def _ordered(jobs: list[Job]) -> list[Job]:
    """One job of each seed set first: the array starts in index order, and a sibling started
    beside the job training the set's round 0 would wait for it (as in :func:`next_job`)."""
    rank: dict[tuple[str, ...], int] = {}
    keyed = []
    for i, job in enumerate(jobs):
        key = seed_set(job)
        keyed.append((rank.get(key, 0), i, job))
        rank[key] = rank.get(key, 0) + 1
    return [job for _, _, job in sorted(keyed, key=lambda t: t[:2])]


def run_on_slurm(cfg: DictConfig, pending: list[Job], threads: int | None, base: Path) -> None:
    """Submit the unfinished jobs as one array (those already queued are not submitted again),
    then wait for the array unless ``sweep.slurm.wait=false``; set each job's status."""
    s = cfg.sweep.slurm
    folder = base / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "jobs.json"
    try:
        known: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    except (OSError, ValueError):
        known = {}
    states = _queue_states(set(known.values())) or {}
    queued = {d: t for d, t in known.items() if states.get(t) in ACTIVE}
    todo = [j for j in pending if str(j.run_dir) not in queued]
    if queued:
        print(f"sweep: {len(queued)} job(s) already queued or running: waiting for them")
    ids = {str(j.run_dir): queued[str(j.run_dir)] for j in pending if str(j.run_dir) in queued}
    if todo:
        try:
            executor = _executor(cfg, folder)
            n_threads = int(threads or s.cpus_per_task)
            submitted = executor.submit_array([SweepTask(j, n_threads) for j in _ordered(todo)])
        except (submitit.core.utils.FailedJobError, FileNotFoundError) as err:
            raise ConfigError(
                f"sweep.launcher=slurm: sbatch failed ({err}). Check sweep.slurm.partition, "
                f"time and the other sweep.slurm settings against sinfo, or run with "
                f"sweep.launcher=local"
            ) from err
        for job, task in zip(_ordered(todo), submitted):
            ids[str(job.run_dir)] = task.job_id
        array = submitted[0].job_id.split("_")[0]
        print(
            f"sweep: submitted {len(todo)} job(s) as SLURM array {array} "
            f"(logs: {folder}/<job id>/); squeue -j {array}; scancel {array} stops them",
            flush=True,
        )
    atomic_write_json(record, {**known, **ids})
    if not s.get("wait", True):
        for job in pending:
            job.status = "submitted"
        print(
            "sweep: not waiting (sweep.slurm.wait=false); rerun this command to wait for the "
            "array and write the report: finished jobs are skipped, queued ones not resubmitted",
            flush=True,
        )
        return
    _wait(pending, ids, float(s.get("poll", 30)))


def _wait(pending: list[Job], ids: dict[str, str], poll: float) -> None:
    """Wait until no task is queued or running; then a job is done if its run finished."""
    by_dir = {str(j.run_dir): j for j in pending}
    left = dict(ids)
    last: dict[str, str] = {}
    while left:
        states = _queue_states(set(left.values()))
        if states is not None:
            for run_dir, task in list(left.items()):
                state = states.get(task, "ENDED")
                if state != last.get(task):
                    print(f"sweep: {state:10s} {task} {run_dir}", flush=True)
                    last[task] = state
                if state not in ACTIVE:
                    del left[run_dir]
                    job = by_dir[run_dir]
                    job.status = "done" if job_state(job.run_dir) == "finished" else "failed"
                    job.log_path = job.run_dir / "sweep.log"
        if left:
            time.sleep(poll)
