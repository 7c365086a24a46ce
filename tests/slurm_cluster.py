"""A single-node SLURM on this machine, for tests: munged, slurmctld and slurmd on localhost.

Everything lives in one temporary folder (config, state, spool, logs, munge socket and key), the
daemons run in the foreground as children of this process and are stopped by :meth:`stop`, and
the SLURM commands find the config through ``$SLURM_CONF``: nothing under /etc is changed.
Needs root (slurmd starts jobs as their user) and Debian's ``slurm-wlm`` and ``munge``.

    python -m tests.slurm_cluster /tmp/slurm     # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    for folder in (*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise SlurmUnavailable(f"{name} is not installed (apt-get install -y slurm-wlm munge, as root)")


def slurm_conf(folder: Path, cpus: int, ports: tuple[int, int]) -> str:
    """A localhost cluster: one node of ``cpus`` CPUs, no cgroups, no accounting."""
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "root")
    return f"""\
ClusterName=axaltest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser={user}
SlurmdUser=root
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """:meth:`start` it, use :attr:`env` for sbatch, squeue and scontrol, :meth:`stop` it."""

    def __init__(self, folder: str | Path, cpus: int = 2) -> None:
        self.folder = Path(folder)
        self.cpus = cpus
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.folder / "slurm.conf"))

    def log_tail(self, chars: int = 2000) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            [_which(name), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                out = (self.folder / f"{name}.out").read_text(errors="replace")[-1500:]
                raise SlurmUnavailable(
                    f"{name} exited with code {proc.returncode}: {out.strip()}\n{self.log_tail()}"
                )

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root to start jobs; this test is not root")
        for name in ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "scontrol"):
            _which(name)
        munge = self.folder / "munge"
        for sub in (munge, self.folder / "state", self.folder / "spool"):
            sub.mkdir(parents=True, exist_ok=True)
        os.chmod(munge, 0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o600)
        ports = (_free_port(), _free_port())
        (self.folder / "slurm.conf").write_text(slurm_conf(self.folder, self.cpus, ports))
        try:
            self._spawn(
                "munged",
                [
                    "-F",
                    "-f",
                    f"--key-file={key}",
                    f"--socket={munge}/munge.socket",
                    f"--pid-file={munge}/munged.pid",
                    f"--log-file={self.folder}/munged.log",
                    f"--seed-file={munge}/munged.seed",
                ],
            )
            self._wait(lambda: (munge / "munge.socket").exists(), 20, "munged's socket")
            self._spawn("slurmctld", ["-D", "-c", "-i", "-f", str(self.folder / "slurm.conf")])
            self._spawn("slurmd", ["-D", "-N", "localhost", "-f", str(self.folder / "slurm.conf")])
            self._wait(self.node_idle, timeout, "the node to be idle in sinfo")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"timed out waiting for {what}\n{self.log_tail()}")
            time.sleep(0.5)

    def node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True
        )
        return out.returncode == 0 and "localhost idle" in out.stdout

    def _jobs_left(self) -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,CG,RQ,S", "-o", "%i"],
            env=self.env,
            capture_output=True,
            text=True,
        )
        return out.returncode == 0 and bool(out.stdout.strip())

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (TERM, then KILL)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--full", "--partition", PARTITION],
                env=self.env,
                capture_output=True,
                timeout=30,
            )
            deadline = time.monotonic() + 30  # the jobs' processes end before slurmd does
            while time.monotonic() < deadline and self._jobs_left():
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/axal-slurm")
    if folder.exists():
        shutil.rmtree(folder)
    cluster = LocalSlurm(folder).start()
    print(f"export SLURM_CONF={folder / 'slurm.conf'}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        cluster.stop()
