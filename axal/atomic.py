"""Atomic file writes: a reader (or a resumed run) never sees half a results file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write via a temp file in the same folder + os.replace so readers never see half a file."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(err, path) from err
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):  # a full disk, a read-only folder: name the file
            raise write_error(err, path) from err
        raise


def write_error(err: OSError, path: str | Path) -> OSError:
    """``err`` as an OSError naming ``path`` and saying that what was there is kept."""
    reason = err.strerror or str(err)
    kept = " (the previous file is kept)" if Path(path).exists() else ""
    return OSError(err.errno, f"cannot write {path}: {reason}{kept}")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")
