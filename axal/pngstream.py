"""8-bit grey PNGs written a band of rows at a time, for masks too large to encode whole.

PIL encodes a PNG from an image held whole; a 20,000 x 20,000 mask is 400 MB of rows that
arrive band by band from sliding-window inference. This writer takes the rows as they come
(PNG's own format: IHDR, zlib-compressed IDAT chunks, IEND, each with its CRC), so only the
compressor's window is held. The file goes to a temporary name beside its target and is renamed
over it when complete (as :func:`axal.atomic.atomic_write`): a full disk or a crash never leaves
half a mask. Any PNG reader (PIL, AxonDeepSeg, napari, GIMP) opens the result.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from pathlib import Path
from types import TracebackType

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK = 1 << 20  # compressed bytes per IDAT chunk


class GreyPngWriter:
    """``with GreyPngWriter(path, height, width) as png: png.write(rows)`` for uint8 rows
    (n, width) top down; the file appears at ``path`` when all ``height`` rows are in.
    ``digest``: SHA-256 of the file's bytes (what was written, without reading it back)."""

    def __init__(self, path: str | Path, height: int, width: int, level: int = 6) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"{path}: a PNG needs at least one row and column ({width}x{height})")
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.zlib = zlib.compressobj(level)
        self.pending = b""
        self.rows = 0
        self.digest: str | None = None
        self._emit(SIGNATURE)
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 0, 0, 0, 0)  # 8-bit grey
        self._chunk(b"IHDR", header)

    def _emit(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)

    def _chunk(self, kind: bytes, data: bytes) -> None:
        crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
        self._emit(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc))

    def write(self, rows: np.ndarray) -> None:
        """Add the next rows, uint8 (n, width)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.width or rows.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: rows must be uint8 of width {self.width}, got {rows.dtype} "
                f"{rows.shape}"
            )
        if self.rows + rows.shape[0] > self.height:
            raise ValueError(f"{self.path}: more than {self.height} rows")
        scan = np.zeros((rows.shape[0], self.width + 1), dtype=np.uint8)  # filter 0 (None)
        scan[:, 1:] = rows
        self.pending += self.zlib.compress(scan.tobytes())
        self.rows += rows.shape[0]
        while len(self.pending) >= CHUNK:
            self._chunk(b"IDAT", self.pending[:CHUNK])
            self.pending = self.pending[CHUNK:]

    def close(self) -> Path:
        """Finish the file and rename it over ``path``."""
        try:
            if self.rows != self.height:
                raise ValueError(f"{self.path}: {self.rows} of {self.height} rows written")
            self.pending += self.zlib.flush()
            self._chunk(b"IDAT", self.pending)
            self._chunk(b"IEND", b"")
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except BaseException as err:
            self.abort()
            if isinstance(err, OSError):  # a full disk: name the file
                from axal.atomic import write_error

                raise write_error(err, self.path) from err
            raise
        self.digest = self.hash.hexdigest()
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file; whatever was at ``path`` stays."""
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> GreyPngWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
