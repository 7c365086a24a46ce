"""Thread defaults follow the CPUs a process may really use, and OpenMP does not spin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from axal.threads import usable_cpus

ROOT = Path(__file__).resolve().parents[1]


def test_cgroup_v2_quota_caps_the_thread_count(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path) == 1


def test_unlimited_or_missing_quota_leaves_the_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity


def test_cgroup_v1_quota_is_read(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_importing_axal_makes_openmp_sleep_unless_the_user_chose():
    code = "import axal, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True)
    assert out.stdout.decode().strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True)
    assert out.stdout.decode().strip() == "ACTIVE"
