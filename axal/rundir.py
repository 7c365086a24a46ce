"""Run folders: one per run, locked while in use, and resumed only into the same experiment.

- **A folder no other run can take.** ``hydra.run.dir`` ends in the start time plus a short
  random suffix (``${axal.uid:}``), so two runs started in the same second get two folders.
- **A lock while a run uses it.** :class:`RunLock` holds ``run.lock`` (pid, host, start time)
  with an exclusive ``flock``, so fixed folders (sweep jobs, ``hydra.run.dir=...``,
  ``resume=...``) cannot be used by two runs at once: the second fails, naming the first. A
  lock left by a dead process is taken over with a warning.
- **Resume into the same experiment.** :func:`compare_configs` refuses any change to a setting
  that alters the experiment, naming it; settings that only change speed or logging may change
  (:data:`MAY_CHANGE`) and ``al.rounds`` may grow (extends a run).
- **Nothing overwritten.** A resumed run writes its config beside ``config.yaml``
  (:func:`write_config`), and Hydra's own record goes to a new ``.hydra/<time>_<id>/`` when the
  folder already has one (``${axal.hydra_subdir:...}``).

No torch here: ``run.py`` imports this before ``@hydra.main`` to register the resolvers.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from axal.atomic import atomic_write
from axal.errors import ConfigError
from axal.results import RESULTS

log = logging.getLogger("axal")

LOCK = "run.lock"
CONFIG = "config.yaml"
# settings that change only speed, memory or logging: a resumed run may change them (a run
# begun on a GPU may go on on a CPU: same precision, steps and seeds)
MAY_CHANGE = (
    "resume",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_threads",
    "trainer.progress",
    "trainer.checkpoint_every",
    "logger",
    "dataset.num_workers",
    "al.tile_batch",
    "al.sample_chunk",
    "al.n_fixed_maps",
    "al.first_round_cache",
    "sweep",
    "hydra",
)
# settings that may grow on resume: more rounds extend a run (a finished one too)
MAY_GROW = ("al.rounds",)


# --------------------------------------------------------------------------- resolvers


def _uid() -> str:
    return secrets.token_hex(3)


def _run_dir(resume: Any, fresh: str) -> str:
    """``hydra.run.dir``: the resumed folder (so run.log continues there), else a fresh one.

    A ``resume`` path that is not a folder gets a fresh folder: ``run`` then refuses it there,
    and the error lands in that folder's run.log rather than creating the missing path.
    """
    if resume not in (None, "") and Path(str(resume)).expanduser().is_dir():
        return str(resume)
    return fresh


def _hydra_subdir(output_dir: str, stamp: str) -> str:
    """``hydra.output_subdir``: ``.hydra``, or ``.hydra/<stamp>`` if the folder has one already."""
    if (Path(output_dir) / ".hydra" / "config.yaml").exists():
        return f".hydra/{stamp}"
    return ".hydra"


def register_resolvers() -> None:
    """``axal.uid`` (one random suffix per config), ``axal.run_dir``, ``axal.hydra_subdir``."""
    OmegaConf.register_new_resolver("axal.uid", _uid, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("axal.run_dir", _run_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver(
        "axal.hydra_subdir", _hydra_subdir, use_cache=True, replace=True
    )


def stamp() -> str:
    """A file-name-safe time plus a random suffix: unique even within one second."""
    return f"{_dt.datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}_{_uid()}"


# --------------------------------------------------------------------------- locks


class RunFolderInUse(ConfigError):
    """Another live run holds the folder's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "a process whose lock file is unreadable"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
        f"{info.get('started', '?')}"
    )


class RunLock:
    """An exclusive lock on a run folder: ``run.lock`` holding pid, host and start time.

    The lock is an ``flock`` on that file, so the kernel releases it when the process dies,
    however it dies; a lock file left behind by a dead process is taken over with a warning.
    A live holder makes :meth:`acquire` raise :class:`RunFolderInUse`, naming it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunFolderInUse(
                    f"run folder {self.run_dir} is in use by another run "
                    f"({_describe(_read_lock(self.path))}). Wait for it to finish, stop it, or "
                    f"use another folder"
                ) from None
            try:  # the holder may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_lock(self.path)
        if previous:
            log.warning(
                "run folder %s: taking over the lock left by a run that is gone (%s)",
                self.run_dir,
                _describe(previous),
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """Who holds ``run_dir``'s lock now (its lock file's contents), or None if nobody."""
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_lock(path) or {"pid": None}
    finally:
        os.close(fd)
    return None


# --------------------------------------------------------------------------- folders


def check_fresh(run_dir: Path) -> None:
    """A new run must not take over a folder that already holds a run's results."""
    if (run_dir / RESULTS).exists():
        raise ConfigError(
            f"{run_dir} already holds a run ({RESULTS}). Continue it with resume={run_dir}, "
            f"or start this run in another folder"
        )


def check_resume_dir(resume: str | Path) -> Path:
    """The folder to resume: it must exist and hold a results.json (never created here)."""
    path = Path(str(resume)).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"resume={resume}: no such folder. Give the folder of an earlier run "
            f"(outputs/<dataset>/<strategy>/seed<k>/<time>_<id>)"
        )
    if not (path / RESULTS).is_file():
        raise ConfigError(
            f"resume={resume}: the folder has no {RESULTS}, so no finished round to continue "
            f"from. Start a new run instead"
        )
    return path


def write_config(run_dir: Path, text: str, tag: str = "resume") -> Path:
    """Write the resolved config as ``config.yaml``, or beside it if one is there already."""
    path = run_dir / CONFIG
    if path.exists():
        path = run_dir / f"config.{tag}-{stamp()}.yaml"
    atomic_write(path, text)
    return path


# --------------------------------------------------------------------------- resume checks


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"al": {"rounds": 3}}`` -> ``{"al.rounds": 3}``; lists are single values."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


_ABSENT = "(absent)"


def matches_any(key: str, names: tuple[str, ...]) -> bool:
    """Whether the flat config ``key`` is one of ``names`` or lies under one of them."""
    return any(key == n or key.startswith(n + ".") for n in names)


def compare_configs(
    recorded: dict[str, Any], new: dict[str, Any], run_dir: str | Path = ""
) -> dict[str, list[Any]]:
    """The settings a resume changes, ``{key: [old, new]}``; refuse those that alter the run.

    Allowed: :data:`MAY_CHANGE` (speed, logging), :data:`MAY_GROW` growing, and settings the
    recorded run did not have (added to axal since; a warning names them). Anything else that
    differs raises :class:`ConfigError` naming every such setting with its old and new value.
    """
    old_flat = flatten(json.loads(json.dumps(recorded, default=str)))
    new_flat = flatten(json.loads(json.dumps(new, default=str)))
    changed: dict[str, list[Any]] = {}
    refused: list[str] = []
    added: list[str] = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, value = old_flat.get(key, _ABSENT), new_flat.get(key, _ABSENT)
        if old == value:
            continue
        changed[key] = [old, value]
        if matches_any(key, MAY_CHANGE):
            continue
        if key in MAY_GROW and isinstance(old, int) and isinstance(value, int) and value > old:
            continue
        if old == _ABSENT:
            added.append(f"{key}={value!r}")
            continue
        refused.append(f"{key}: {old!r} -> {value!r}")
    if refused:
        what = "a setting" if len(refused) == 1 else "settings"
        raise ConfigError(
            f"resume={run_dir}: this command changes {what} of the recorded run that would "
            f"alter the experiment: {'; '.join(refused)}. Resume with the recorded values, or "
            f"start a new run for the new setting. Only speed and logging settings "
            f"({', '.join(MAY_CHANGE[:-2])}) may change, and al.rounds may grow"
        )
    if added:
        log.warning(
            "resume=%s: the recorded run predates these settings, now %s",
            run_dir,
            ", ".join(added),
        )
    return changed


# --------------------------------------------------------------------------- sweep jobs

PARENT_ENV = "AXAL_SWEEP_PID"


def die_with_parent() -> None:
    """In a sweep job (``$AXAL_SWEEP_PID`` set): die when the sweep process dies.

    On Linux the kernel sends SIGKILL when the parent goes (``PR_SET_PDEATHSIG``); elsewhere a
    thread checks the parent every second. The job's files stay consistent (atomic writes),
    and its lock is released by the kernel, so the next sweep resumes the job.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    parent_pid = int(parent)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    else:

        def watch() -> None:
            while os.getppid() == parent_pid:
                threading.Event().wait(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="axal-parent-watch").start()
    if os.getppid() != parent_pid:  # the sweep died before the line above took effect
        os.kill(os.getpid(), signal.SIGKILL)


def unwritable(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be created or written, or None when it can."""
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            return f"{path} is not writable"
        return f"{path} cannot be created: {existing} is not writable"
    return None


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency; keep this module importable
    _HydraCallback = object  # type: ignore[assignment,misc]


class WritableFolder(_HydraCallback):
    """Hydra callback (``hydra.callbacks``): before Hydra creates the run folder and its log
    file, check that it can; an unwritable folder (a read-only dataset, a path through a file)
    is then one paragraph naming the folder and the setting to change, not a traceback."""

    def __init__(self, setting: str = "hydra.run.dir") -> None:
        self.setting = setting

    def _check(self, folder: Any) -> None:
        why = unwritable(str(folder))
        if why is None:
            return
        err = ConfigError(
            f"the work folder {folder} cannot be used ({why}): set {self.setting}=<a folder "
            "you can write>"
        )
        from axal import errors

        if errors.full_error():
            raise err
        print(errors.paragraph(err), file=sys.stderr, flush=True)
        sys.exit(1)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)
