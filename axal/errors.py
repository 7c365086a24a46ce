"""User-facing errors: bad input data or settings, reported as one paragraph, not a traceback.

``run.py`` catches :class:`AxalError` (``axal.data.DataError`` and :class:`ConfigError` are
both), logs the message to the run's ``run.log`` and prints it to stderr as one paragraph:
what is wrong, which file or setting, what to do. ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import textwrap


class AxalError(Exception):
    """An error in the user's data or settings; the message names the file or setting."""


class ConfigError(AxalError, ValueError):
    """A setting (or combination of settings, or a run folder) that axal cannot work with."""


def override(value: object) -> str:
    """A value as a Hydra override writes it: ``null``, ``true``/``false``, else as is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def quote_spaces(argv: list[str]) -> list[str]:
    """Command-line overrides with a space in their value quoted for Hydra's grammar, which
    refuses ``dataset.root=/data/my images`` unquoted: a path as the shell passes it works."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if (
            sep
            and not key.startswith("-")
            and any(c.isspace() for c in value)
            and value[:1] not in ("'", '"', "[", "{")
            and "'" not in value
        ):
            arg = f"{key}='{value}'"
        out.append(arg)
    return out


def full_error() -> bool:
    """True when the user asked for tracebacks (Hydra's own switch)."""
    return os.environ.get("HYDRA_FULL_ERROR", "") == "1"


def paragraph(err: BaseException, width: int = 100) -> str:
    """The error as one wrapped paragraph, with the hint for the traceback."""
    text = " ".join(str(err).split())
    hint = "(Set HYDRA_FULL_ERROR=1 for the traceback.)"
    # paths stay whole on one line (copy-pasteable): no breaks at their hyphens or inside them
    return textwrap.fill(
        f"Error: {text} {hint}", width=width, break_on_hyphens=False, break_long_words=False
    )


def log_to_files(logger: logging.Logger, level: int, message: str, exc_info=None) -> None:
    """Write a record to the log files only (Hydra's ``run.log``), not to the console.

    The console gets the paragraph on stderr instead, so the message is not shown twice.
    """
    record = logger.makeRecord(logger.name, level, __file__, 0, message, (), exc_info)
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        node = node.parent if node.propagate else None


def report(err: BaseException, logger: logging.Logger) -> str:
    """Log ``err`` to the run log and print it to stderr as one paragraph; return the text."""
    text = paragraph(err)
    log_to_files(logger, logging.ERROR, text)
    print(text, file=sys.stderr, flush=True)
    return text
