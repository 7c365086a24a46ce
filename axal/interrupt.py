"""Stopping a run: SIGTERM (SLURM, ``timeout``, ``kill``) and SIGINT (Ctrl-C) end it the same way.

Both raise :class:`Interrupted`, a ``BaseException`` that is not a ``KeyboardInterrupt``, so
Lightning tears its trainer down and re-raises it instead of calling ``sys.exit(1)`` on its own;
the entry point then prints the one-line resume command and exits non-zero.

USR1 and USR2 are left alone, but for one case: a run started by a submitit task of a SLURM
sweep (:mod:`axal.slurm`) ignores the signal named in ``$AXAL_SUBMITIT_SIGNAL`` (USR2). SLURM
sends it to every process of the job; it is submitit's, in the parent, which stops this run
with SIGTERM and requeues the job. Dying of it here would pre-empt that handler.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

SIGNAL_ENV = "AXAL_SUBMITIT_SIGNAL"  # a signal this run's submitit parent handles (USR2)


class Interrupted(BaseException):
    """The run was asked to stop by a signal; ``code`` is the conventional 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.code = 128 + signum
        super().__init__(signal.Signals(signum).name)


def _raise(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal while shutting down stops at once
    raise Interrupted(signum)


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` in the main thread; ignore the signal
    a submitit parent owns (``$AXAL_SUBMITIT_SIGNAL``)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise)
    owned = os.environ.get(SIGNAL_ENV)
    if owned:
        signal.signal(signal.Signals["SIG" + owned.upper().removeprefix("SIG")], signal.SIG_IGN)
