"""Hydra multirun and resumable sweeps, run as a user would: through subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, compose_cfg

ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")


def _finished(run_dir: Path) -> bool:
    path = run_dir / "results.json"
    return path.exists() and json.loads(path.read_text()).get("finished", False)


def test_multirun_2x2_gives_each_job_its_own_dir_and_survives_a_failing_job(tmp_path):
    cmd = [
        sys.executable,
        "run.py",
        "-m",
        "experiment=smoke",
        "strategy=random,bald",
        "al.initial=2,50",
        "trainer.progress=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.rglob("results.json"))
    errors = sorted(tmp_path.rglob("error.txt"))
    # al.initial=50 cannot fit 12 synthetic images: those two jobs fail, the others finish
    assert len(results) == 2 and len(errors) == 2
    assert len({p.parent for p in results + errors}) == 4
    strategies = {json.loads(p.read_text())["strategy"] for p in results}
    assert strategies == {"random", "bald"}
    assert all(json.loads(p.read_text())["finished"] for p in results)
    assert all("al.initial" in p.read_text() for p in errors)


def test_killed_sweep_resumes_and_skips_finished_jobs(tmp_path):
    args = [
        sys.executable,
        "sweep.py",
        "experiment=smoke",
        f"sweep.dir={tmp_path}",
        "sweep.grid.strategy=[random]",
        "sweep.grid.seed=[0,1]",
        "al.rounds=3",
        "sweep.threads=1",
    ]
    first = tmp_path / "strategy=random" / "seed0"
    second = tmp_path / "strategy=random" / "seed1"
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not _finished(first) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep dies, as with a lost machine
    output = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode != 0, "the sweep should have been killed mid-way:\n" + output[-3000:]
    assert _finished(first), (
        "the first job should have finished before the kill:\n" + output[-3000:]
    )
    assert not _finished(second)
    stamp = (first / "results.json").stat().st_mtime_ns

    again = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 already finished" in again.stdout
    assert (first / "results.json").stat().st_mtime_ns == stamp  # skipped, not rerun
    assert _finished(second)
    assert len(json.loads((second / "results.json").read_text())["rounds"]) == 3
    assert (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "summary.csv").exists()


def test_launcher_configs_compose():
    joblib = compose_cfg(["hydra/launcher=joblib", "experiment=smoke"])
    assert joblib.strategy.name
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=submitit_slurm"],
            return_hydra_config=True,
        )
    assert "submitit" in cfg.hydra.launcher._target_.lower()


def test_report_subcommand_on_existing_runs(tmp_path):
    from axal.simulation import run

    for strategy, seed in [("random", 0), ("bald", 0)]:
        run(
            compose_cfg(["experiment=smoke", f"strategy={strategy}", f"seed={seed}"]),
            tmp_path / "runs" / strategy,
        )
    out = tmp_path / "rep"
    proc = subprocess.run(
        [sys.executable, "sweep.py", "report", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (out / "report.html").read_text()
    assert "bald" in html and "random" in html and "<img" in html
    # the uncertainty maps that bald saved each round reach the report's evolution figure
    assert (out / "uncertainty_maps.png").exists()


def one_job_sweep(sweep_dir):
    """``sweep(*overrides)``: sweep.py on a one-job smoke grid in ``sweep_dir``."""
    args = [
        sys.executable,
        "sweep.py",
        "experiment=smoke",
        f"sweep.dir={sweep_dir}",
        "sweep.grid.strategy=[random]",
        "sweep.grid.seed=[0]",
        "al.rounds=1",
        "sweep.threads=1",
    ]

    def sweep(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*args, *extra], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
        )

    return sweep


def test_a_sweep_rerun_with_changed_settings_refuses_naming_them(tmp_path):
    """A finished job's folder is reused only with the settings it ran with: the same command
    skips it, a changed trainer.steps refuses naming it, and another sweep.dir starts afresh."""
    sweep = one_job_sweep(tmp_path / "a")

    first = sweep()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    same = sweep()
    assert same.returncode == 0 and "1 already finished" in same.stdout, same.stderr[-3000:]
    steps = compose_cfg(["experiment=smoke"]).trainer.steps
    changed = sweep(f"trainer.steps={steps + 1}")
    assert changed.returncode == 1
    assert f"trainer.steps: {steps} -> {steps + 1}" in changed.stderr, changed.stderr[-3000:]
    assert "Traceback" not in changed.stderr
    assert "sweep.dir" in changed.stderr
    job = tmp_path / "a" / "strategy=random" / "seed0"
    assert json.loads((job / "results.json").read_text())["config"]["trainer"]["steps"] == steps


def test_a_sweep_with_replicates_shares_round_0_and_reports_them_as_draws(tmp_path):
    """A grid axis al.replicate=[null, 1] (null: the default, no folder name), excluded for
    bald: random runs twice on the seed, the second draw loads round 0 from the first, and
    the report counts one seed of random with two draws."""
    args = [
        sys.executable,
        "sweep.py",
        "experiment=smoke",
        f"sweep.dir={tmp_path}",
        "sweep.grid.strategy=[random,bald]",
        "sweep.grid.seed=[0]",
        "+sweep.grid.al.replicate=[null,1]",
        "sweep.exclude=[{strategy:bald,al.replicate:1}]",
        "sweep.threads=1",
    ]
    listed = subprocess.run(
        [*args[:2], "list", *args[2:]], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "sweep: 3 jobs" in listed.stdout and "strategy=random,replicate=1/seed0" in listed.stdout
    assert "strategy=bald/seed0" in listed.stdout and "strategy=bald,replicate" not in listed.stdout
    args[4] = "sweep.grid.strategy=[random]"  # run random's two draws only (bald: listed)
    proc = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    first = json.loads((tmp_path / "strategy=random" / "seed0" / "results.json").read_text())
    second_dir = tmp_path / "strategy=random,replicate=1" / "seed0"
    second = json.loads((second_dir / "results.json").read_text())
    assert (first["replicate"], second["replicate"]) == (0, 1)
    entries = {first["rounds"][0]["shared_first_round"]["entry"]}
    entries.add(second["rounds"][0]["shared_first_round"]["entry"])
    assert len(entries) == 1
    assert first["rounds"][0]["test"] == second["rounds"][0]["test"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    random = summary["datasets"]["synthetic"]["strategies"]["random"]
    assert random["n_seeds"] == 1 and random["n_draws"] == 2


def test_a_follow_on_arm_is_reported_with_the_study_it_follows(tmp_path):
    """sweep.report_with: the end-of-sweep report of a sweep in its own folder holds the runs
    of the folders named there, so a new arm is compared with the study's random arm."""
    study = one_job_sweep(tmp_path / "study")()
    assert study.returncode == 0, study.stderr[-3000:]
    sweep = one_job_sweep(tmp_path / "follow")
    typo = sweep("sweep.grid.strategy=[bald]", f"sweep.report_with=[{tmp_path / 'stduy'}]")
    assert typo.returncode == 1 and "sweep.report_with" in typo.stderr
    assert str(tmp_path / "stduy") in typo.stderr
    assert not (tmp_path / "follow" / "strategy=bald").exists()  # refused before any job ran
    follow = sweep("sweep.grid.strategy=[bald]", f"sweep.report_with=[{tmp_path / 'study'}]")
    assert follow.returncode == 0, follow.stderr[-3000:]
    summary = json.loads((tmp_path / "follow" / "report" / "summary.json").read_text())
    (dataset,) = summary["datasets"].values()
    assert set(dataset["strategies"]) == {"random", "bald"}
    assert not (tmp_path / "follow" / "strategy=random").exists()  # nothing ran twice
