"""CPU threads that survive a busy machine.

OpenMP threads that spin-wait for each other collapse when other processes compete for the
cores (0.13 steps/s instead of 8 on a loaded 2-core machine). Two defences, both overridable:

- ``quiet_openmp()`` asks OpenMP to sleep, not spin, while it waits (``OMP_WAIT_POLICY=PASSIVE``,
  and ``KMP_BLOCKTIME=0`` for Intel's runtime). OpenMP reads these once, when torch loads, so
  ``axal/__init__.py`` calls it before any module imports torch.
- ``usable_cpus()`` counts the CPUs this process may really use: its affinity mask and its cgroup
  CPU quota (a container or a SLURM job given 2 of a node's 64 cores), not ``os.cpu_count()``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def quiet_openmp() -> None:
    """Let waiting OpenMP threads sleep (a user's own setting wins); call before importing torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def _cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, else v1 CFS), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may use: affinity, capped by the cgroup quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
