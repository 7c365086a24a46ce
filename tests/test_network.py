"""No surprise network calls: importing axal and a whole run work with sockets disabled."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import FAST, ROOT

# Runs in a fresh interpreter, so every import happens here for the first time (albumentations
# 2.x checks PyPI at import unless told not to). Any attempt to reach the network is recorded
# and refused; local (AF_UNIX) sockets stay allowed.
SCRIPT = r"""
import socket, sys

attempts = []
_connect = socket.socket.connect

def _refuse(what):
    def refuse(*args, **kwargs):
        attempts.append(f"{what}{args[:2]!r}")
        raise OSError(f"network disabled by the test: {what}")
    return refuse

def connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address)
    return _refuse("connect")(address)

socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: connect(self, address)
socket.socket.sendto = _refuse("sendto")
socket.create_connection = _refuse("create_connection")
socket.getaddrinfo = _refuse("getaddrinfo")
socket.gethostbyname = _refuse("gethostbyname")

import importlib, pkgutil, runpy
import axal
modules = [m.name for m in pkgutil.walk_packages(axal.__path__, "axal.")]
for name in modules:
    importlib.import_module(name)
for name in ("albumentations", "segmentation_models_pytorch", "lightning", "hydra", "pooch",
             "wandb", "timm", "sweep"):
    importlib.import_module(name)
print("imported", len(modules), "axal modules", flush=True)

sys.argv = ["run.py", *sys.argv[1:]]
try:
    runpy.run_path("run.py", run_name="__main__")
finally:
    print("NETWORK ATTEMPTS:", attempts, flush=True)
sys.exit(3 if attempts else 0)
"""


def test_imports_and_a_short_run_never_touch_the_network(tmp_path):
    script = tmp_path / "offline.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("NO_ALBUMENTATIONS_UPDATE", None)  # axal must opt out by itself
    args = [*FAST, "strategy=mc_dropout", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert "NETWORK ATTEMPTS: []" in out, out[-4000:]
    assert proc.returncode == 0, out[-4000:]
    assert "Error fetching version info" not in out
    assert (tmp_path / "run" / "results.json").exists()
    assert "round 1 |" in (tmp_path / "run" / "run.log").read_text()
