"""Named grids of simulations that survive interruption, and the report that follows them.

An experiment config (``conf/experiment/*.yaml``) holds a ``sweep`` block: ``grid`` (override
key -> list of values; ``null`` keeps a setting's default), ``exclude`` (partial assignments
whose jobs are left out, e.g. ``{strategy: bald, al.replicate: 1}``), ``dir`` (where job
folders go) and ``jobs`` (how many run at once).
Every job gets a fixed folder named after its grid values, runs ``run.py`` in a subprocess (a
crash or a W&B run stays inside its job), and is skipped once its results.json is finished.

A job dies with its sweep (``axal.rundir.die_with_parent``; a SIGTERM/SIGHUP/SIGINT to the
sweep stops its jobs first), and a job folder still locked by a live run (another sweep's job)
is waited for, never run twice at once. An unreadable results.json is moved aside as
``results.json.bad`` and reported, and the job starts again: nothing is silently overwritten.
Jobs that differ only in strategy train round 0 once and share it (``sweep.share_first_round``,
:mod:`axal.first_round`); a free worker starts a job of a seed with none running
(:func:`next_job`), so no job sits idle waiting for a sibling's round 0.

``sweep.launcher=slurm`` starts the same jobs as the tasks of a SLURM job array instead
(:mod:`axal.slurm`): each task calls :func:`run_job`, so nothing else changes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from axal.errors import ConfigError
from axal.results import RESULTS
from axal.rundir import MAY_CHANGE, MAY_GROW, PARENT_ENV, flatten, lock_holder, matches_any
from axal.threads import usable_cpus

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("axal.sweep")


@dataclass
class Job:
    overrides: list[str]
    run_dir: Path
    status: str = "pending"  # pending | finished | resumable | bad | done | failed | skipped
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def in_project(path: Any) -> Path:
    """A configured folder as an absolute path: relative ones are under the repository, so a
    sweep means the same folders whatever directory it is started from."""
    path = Path(str(path))
    return path if path.is_absolute() else ROOT / path


def compose_sweep(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _value_name(value: Any) -> str:
    return str(value).replace("/", "-").replace(" ", "")


def _key_name(key: str) -> str:
    """A grid key's last part: ``semi`` of ``trainer/semi`` (a config group) or ``trainer.semi``."""
    return key.replace("/", ".").rsplit(".", 1)[-1]


def job_dir(base: Path, assignment: dict[str, Any]) -> Path:
    """``<dir>/<key=value,...>/seed<k>``: fixed by the grid values, so a rerun finds it."""
    rest = {k: v for k, v in assignment.items() if k != "seed"}
    name = ",".join(f"{_key_name(k)}={_value_name(v)}" for k, v in rest.items())
    seed = assignment.get("seed", "default")
    return base / (name or "default") / f"seed{seed}"


def expand(cfg: DictConfig, overrides: list[str]) -> list[Job]:
    """One job per combination of the grid's values, each with its own directory."""
    sweep = cfg.get("sweep")
    if sweep is None or not sweep.get("grid"):
        raise ValueError(
            "this config has no sweep.grid: pick an experiment, e.g. experiment=paper_tem"
        )
    base = in_project(sweep.dir)
    grid = grid_axes(OmegaConf.to_container(sweep.grid, resolve=True))
    exclude = sweep.get("exclude")
    exclude = OmegaConf.to_container(exclude, resolve=True) if exclude else []
    exclude = [grid_axes(dict(e), axes=False) for e in exclude]
    # seeds outermost: an interrupted sweep holds complete seed-paired sets of strategies
    keys = sorted(grid, key=lambda k: k != "seed")
    if sweep.get("share_first_round", True) and not cfg.al.get("first_round_cache"):
        shared = in_project(sweep.get("first_rounds") or base / "first_rounds")
        overrides = [*overrides, f"al.first_round_cache='{shared}'"]
    jobs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        # a null value leaves the setting at its default: no override, no name in the folder
        assignment = {k: v for k, v in zip(keys, values) if v is not None}
        if any(all(assignment.get(k) == v for k, v in e.items()) for e in exclude):
            continue
        label = sweep.get("label")
        job_over = [f"{k}={v}" for k, v in assignment.items()]
        if label:
            job_over.append(f"label={_format_label(label, assignment)}")
        jobs.append(Job(overrides + job_over, job_dir(base, assignment)))
    return jobs


def grid_axes(grid: dict[str, Any], axes: bool = True) -> dict[str, Any]:
    """``sweep.grid`` as dotted key -> values: nested blocks (``trainer: {semi: [...]}``, which
    ``sweep.grid.trainer.semi=[...]`` overrides from the command line) and dotted keys
    (``al.replicate: [...]``) both name a setting; with ``axes`` every value is a list."""
    flat: dict[str, Any] = {}
    for key, value in grid.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in grid_axes(value, axes).items()})
        else:
            flat[str(key)] = value
    if axes:
        for key, value in flat.items():
            if not isinstance(value, list) or not value:
                raise ConfigError(f"sweep.grid.{key}={value!r} must be a non-empty list of values")
    return flat


def seed_set(job: Job) -> tuple[str, ...]:
    """The job's overrides but its strategy and replicate: jobs with the same set share
    round 0."""
    skip = ("strategy=", "label=", "al.replicate=")
    return tuple(o for o in job.overrides if not o.startswith(skip))


def next_job(queue: list[Job], running: list[Job]) -> Job:
    """The job to start next: the first whose set has no job running, else the first.

    Jobs that differ only in strategy share round 0 (:mod:`axal.first_round`): a sibling
    started beside the job training it would wait, idle, for it; another seed's job works.
    """
    busy = {seed_set(j) for j in running}
    return next((j for j in queue if seed_set(j) not in busy), queue[0])


def _format_label(template: str, assignment: dict[str, Any]) -> str:
    short = {_key_name(k): v for k, v in assignment.items()}
    return template.format(**short)


def job_state(run_dir: Path) -> str:
    """``finished``, ``resumable`` (results saved), ``pending`` (none), ``bad`` (unreadable)."""
    path = run_dir / RESULTS
    if not path.exists():
        return "pending"
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return "bad"
    if not isinstance(results, dict):
        return "bad"
    return "finished" if results.get("finished") else "resumable"


def set_aside(run_dir: Path) -> Path:
    """Move an unreadable results.json to ``results.json.bad`` (``.bad.1``, ... if taken)."""
    path = run_dir / RESULTS
    target = path.with_name(f"{RESULTS}.bad")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{RESULTS}.bad.{n}")
    os.replace(path, target)
    return target


_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()
_stopping = threading.Event()
_on_slurm = threading.Event()  # waiting for a SLURM array: its jobs go on without us


def _wait_until_free(job: Job, poll: float = 2.0) -> None:
    """Wait while a live run (another sweep's job) holds the job's folder."""
    holder = lock_holder(job.run_dir)
    if holder is None:
        return
    print(
        f"sweep: waiting for {job.run_dir}: in use by pid {holder.get('pid')} on "
        f"{holder.get('host')} since {holder.get('started')}",
        flush=True,
    )
    while holder is not None and not _stopping.is_set():
        time.sleep(poll)
        holder = lock_holder(job.run_dir)


def _threads_per_job(jobs: int) -> int:
    return max(1, usable_cpus() // max(1, jobs))


def run_job(
    job: Job, threads: int, python: str = sys.executable, env: dict[str, str] | None = None
) -> Job:
    """Run one job in a subprocess; its output goes to ``<run dir>/sweep.log``.

    ``env`` adds to the job's environment (a SLURM task names the signal its parent owns).
    """
    job.run_dir.mkdir(parents=True, exist_ok=True)
    _wait_until_free(job)
    if _stopping.is_set():
        job.status = "stopped"
        return job
    state = job_state(job.run_dir)  # again: the run we waited for may have moved it on
    if state == "finished":
        job.status = "skipped"
        return job
    if state == "bad":
        moved = set_aside(job.run_dir)
        job.extra["bad"] = moved
        print(
            f"sweep: {job.run_dir / RESULTS} is unreadable: moved to {moved.name}; "
            f"the job starts again",
            file=sys.stderr,
            flush=True,
        )
        state = "pending"
    job.status = state
    quoted = "'" + str(job.run_dir).replace("'", "\\'") + "'"  # paths hold '=' and ','
    cmd = [python, str(ROOT / "run.py"), *job.overrides, f"hydra.run.dir={quoted}"]
    cmd.append(f"trainer.num_threads={threads}")
    cmd.append("trainer.progress=false")
    if job.status == "resumable":
        cmd.append(f"resume={quoted}")
    env = dict(os.environ, **(env or {}))
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env[PARENT_ENV] = str(os.getpid())  # the job dies with this process
    job.log_path = job.run_dir / "sweep.log"
    with open(job.log_path, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        with _live_lock:
            if _stopping.is_set():
                job.status = "stopped"
                return job
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            _live.add(proc)
        try:
            returncode = proc.wait()
        finally:
            with _live_lock:
                _live.discard(proc)
    job.extra["returncode"] = returncode
    job.status = "done" if returncode == 0 and job_state(job.run_dir) == "finished" else "failed"
    return job


def _stop_jobs(signum: int, frame: object) -> None:
    """On SIGTERM/SIGHUP/SIGINT: stop the running jobs (SIGTERM, then SIGKILL), then exit."""
    _stopping.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    if _on_slurm.is_set():
        print(
            f"sweep: stopped waiting (signal {signum}); the SLURM jobs go on. Rerun the same "
            "command to wait for them (nothing is submitted twice) and write the report",
            flush=True,
        )
    else:
        print(f"sweep: stopped by signal {signum}; rerun the same command to resume", flush=True)
    raise SystemExit(128 + signum)


def _install_signal_handlers() -> dict[int, object]:
    """Stop the jobs on SIGTERM/SIGHUP/SIGINT; return the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {
        sig: signal.signal(sig, _stop_jobs)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    }


def run_sweep(cfg: DictConfig, overrides: list[str], jobs: int | None = None) -> list[Job]:
    """Run every unfinished job of the grid (``jobs`` at a time); failures don't stop others."""
    todo = expand(cfg, overrides)
    _stopping.clear()
    previous = _install_signal_handlers()
    try:
        _run_jobs(cfg, todo, jobs)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return todo


# settings that a job's folder may be rerun with: speed, logging, paths the sweep sets itself
RERUN_MAY_CHANGE = (*MAY_CHANGE, *MAY_GROW, "al.first_round_cache", "hydra", "sweep")


def changed_settings(job: Job) -> list[str]:
    """``key: old -> new`` for every setting of ``job`` that differs from the one its saved
    run (results.json) was run with; settings one side lacks (added to axal since) count not."""
    try:
        recorded = json.loads((job.run_dir / RESULTS).read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return []
    cfg = compose_sweep(job.overrides)
    try:
        now = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only the running job can resolve (its Hydra paths)
        now = OmegaConf.to_container(cfg, resolve=False)
    old = flatten(json.loads(json.dumps(recorded, default=str)))
    new = flatten(json.loads(json.dumps(now, default=str)))
    return [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(set(old) & set(new))
        if old[key] != new[key] and not matches_any(key, RERUN_MAY_CHANGE)
    ]


def check_unchanged(todo: list[Job], sweep_dir: Any) -> None:
    """Refuse a sweep whose saved jobs ran with other settings, naming them: their results
    would be reported as if run with these."""
    changes: dict[str, list[Path]] = {}
    for job in todo:
        if job.status in ("finished", "resumable"):
            for change in changed_settings(job):
                changes.setdefault(change, []).append(job.run_dir)
    if changes:
        listed = "; ".join(f"{c} (e.g. {dirs[0]})" for c, dirs in sorted(changes.items()))
        raise ConfigError(
            f"sweep.dir={sweep_dir} holds jobs run with other settings than this command's: "
            f"{listed}. Rerun with the recorded values, or start a new sweep folder: "
            "sweep.new=true (beside it, named <dir>-2, -3, ...) or another sweep.dir=..."
        )


def new_sweep_dir(cfg: DictConfig, overrides: list[str]) -> Path | None:
    """With ``sweep.new=true``: the folder to sweep in when ``sweep.dir``'s saved jobs ran with
    other settings, ``<dir>-2``, ``<dir>-3``, ...: the first that is new or holds this very
    sweep (so rerunning the command resumes it); None when ``sweep.dir`` itself serves."""
    base = in_project(cfg.sweep.dir)
    n = 1
    while True:
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not folder.exists():
            return None if n == 1 else folder
        trial = cfg.copy()
        OmegaConf.update(trial, "sweep.dir", str(folder))
        todo = expand(trial, overrides)
        for job in todo:
            job.status = job_state(job.run_dir)
        try:
            check_unchanged(todo, folder)
        except ConfigError:
            n += 1
            continue
        return None if n == 1 else folder


def _run_jobs(cfg: DictConfig, todo: list[Job], jobs: int | None) -> None:
    for job in todo:
        job.status = job_state(job.run_dir)
    check_unchanged(todo, cfg.sweep.dir)
    for job in todo:
        job.status = job_state(job.run_dir)
        if job.status == "finished":
            job.status = "skipped"
    pending = [j for j in todo if j.status != "skipped"]
    launcher = str(cfg.sweep.get("launcher") or "local")
    if launcher not in ("local", "slurm"):
        raise ConfigError(f"sweep.launcher={launcher}: choose local or slurm")
    if launcher == "slurm":
        _run_on_slurm(cfg, todo, pending)
        return
    n_jobs = int(jobs or cfg.sweep.get("jobs", 1))
    threads = int(cfg.sweep.get("threads") or _threads_per_job(n_jobs))
    print(
        f"sweep: {len(todo)} jobs, {len(todo) - len(pending)} already finished, "
        f"{len(pending)} to run ({n_jobs} at a time, {threads} threads each)",
        flush=True,
    )
    queue, running = list(pending), {}
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        while queue or running:
            while queue and len(running) < n_jobs and not _stopping.is_set():
                job = next_job(queue, list(running.values()))
                queue.remove(job)
                running[pool.submit(run_job, job, threads)] = job
            if not running:  # stopping: nothing started, nothing left to wait for
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                future.result()
                print(f"sweep: {job.status:6s} {job.run_dir}", flush=True)
    _say_failed(todo)


def _run_on_slurm(cfg: DictConfig, todo: list[Job], pending: list[Job]) -> None:
    try:
        from axal.slurm import run_on_slurm
    except ImportError as err:
        raise ConfigError(
            f"sweep.launcher=slurm needs submitit ({err}): pip install -e '.[slurm]'"
        ) from err
    print(
        f"sweep: {len(todo)} jobs, {len(todo) - len(pending)} already finished, "
        f"{len(pending)} to run on SLURM",
        flush=True,
    )
    if pending:
        threads = cfg.sweep.get("threads")
        _on_slurm.set()
        try:
            run_on_slurm(cfg, pending, int(threads) if threads else None, sweep_base(cfg))
        finally:
            _on_slurm.clear()
    for job in pending:
        if job.status in ("done", "failed"):
            print(f"sweep: {job.status:6s} {job.run_dir}", flush=True)
    _say_failed(todo)


def sweep_base(cfg: DictConfig) -> Path:
    """``sweep.dir`` as an absolute path (relative ones are under the repository)."""
    return in_project(cfg.sweep.dir)


def _say_failed(todo: list[Job]) -> None:
    failed = [j for j in todo if j.status == "failed"]
    for job in failed:
        print(f"sweep: FAILED {job.run_dir} (see {job.log_path})", file=sys.stderr, flush=True)
    for job in todo:
        if job.extra.get("bad"):
            print(
                f"sweep: unreadable results kept as {job.extra['bad']}", file=sys.stderr, flush=True
            )


def main_report(
    dirs: list[Path],
    out: Path | None = None,
    include_unfinished: bool = False,
    complete_seeds: bool = False,
) -> int:
    """Write the comparison report for existing runs (results.json files or folders).

    Runs still in progress are left out unless asked for: their shorter curves would shrink
    the budget range over which every strategy's area under the curve is compared. With
    ``complete_seeds`` a study in progress is reported on the seeds every arm has finished,
    so that every arm's mean covers the same test subjects.
    """
    from axal.report import complete_seeds as only_complete
    from axal.report import load_runs, write_report

    if complete_seeds and include_unfinished:
        print("report: --complete-seeds and --include-unfinished contradict", file=sys.stderr)
        return 2
    out = out or (dirs[0] / "report" if len(dirs) == 1 else Path("report"))
    runs = load_runs([str(d) for d in dirs])
    kept = [r for r in runs if include_unfinished or r.get("_finished")]
    if len(kept) < len(runs):
        print(f"report: {len(runs) - len(kept)} unfinished run(s) left out")
    if complete_seeds:
        kept, notes = only_complete(runs)
        for note in notes:
            print(f"report: {note}")
    if not kept:
        print("report: no finished run to report on", file=sys.stderr)
        return 1
    summary = write_report(kept, out)
    print(f"report: {out / 'report.html'}")
    for note in summary.get("notes", [])[:10]:
        print(f"note: {note}")
    return 0


def main_list(overrides: list[str]) -> int:
    """Print the grid's jobs (state, folder, overrides) without running any: a dry run."""
    cfg = compose_sweep(overrides)
    job_overrides = [o for o in overrides if not o.startswith("sweep.")]
    try:
        todo = expand(cfg, job_overrides)
    except (ConfigError, ValueError) as err:
        print(f"sweep: {err}", file=sys.stderr)
        return 1
    base = todo[0].run_dir.parents[1] if todo else Path(cfg.sweep.dir)
    states: dict[str, int] = {}
    for job in todo:
        state = job_state(job.run_dir)
        states[state] = states.get(state, 0) + 1
        grid = [o for o in job.overrides if o not in job_overrides and "first_round_cache" not in o]
        print(f"{state:9s} {job.run_dir.relative_to(base)}  {' '.join(grid)}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    print(f"sweep: {len(todo)} jobs in {base} ({counts})")
    return 0


def report_with(cfg: DictConfig) -> list[Path]:
    """``sweep.report_with``'s folders, checked before any job runs rather than after all."""
    folders = [in_project(d) for d in cfg.sweep.get("report_with") or []]
    missing = [str(d) for d in folders if not d.is_dir()]
    if missing:
        raise ConfigError(
            f"sweep.report_with names no run folder at {', '.join(missing)}: the end-of-sweep "
            "report compares with the runs there; fix the path or drop it"
        )
    return folders


def main_sweep(overrides: list[str]) -> int:
    from axal import errors

    cfg = compose_sweep(overrides)
    # the sweep's own knobs are not job overrides
    job_overrides = [o for o in overrides if not o.startswith("sweep.")]
    try:
        others = report_with(cfg)
        if cfg.sweep.get("new"):
            folder = new_sweep_dir(cfg, job_overrides)
            if folder is not None:
                print(
                    f"sweep: {cfg.sweep.dir} holds jobs run with other settings "
                    f"(sweep.new=true): sweeping in {folder}",
                    flush=True,
                )
                OmegaConf.update(cfg, "sweep.dir", str(folder))
        jobs = run_sweep(cfg, job_overrides)
    except (errors.AxalError, OSError) as err:
        if errors.full_error():
            raise
        print(errors.paragraph(err), file=sys.stderr, flush=True)
        return 1
    base = sweep_base(cfg)
    runs = [j.run_dir for j in jobs if job_state(j.run_dir) != "pending"]
    if any(j.status == "submitted" for j in jobs):  # sweep.slurm.wait=false: nothing to report yet
        return 0
    if runs:
        report_dir = in_project(cfg.sweep.get("report_dir") or base / "report")
        # on the seeds every arm finished: a failed job, or an arm of report_with's folders
        # run on fewer seeds, costs its seed rather than a whole arm (which the report drops)
        main_report([base, *others], report_dir, complete_seeds=True)
    return 1 if any(j.status == "failed" for j in jobs) else 0
