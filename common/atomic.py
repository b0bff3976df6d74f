"""One way to write a file so that a reader, or a crash, never sees half of it: a temporary file
beside it, fsynced, then ``os.replace`` (atomic on POSIX and Windows) to the final name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ..errors import STORAGE_ERRNOS, StorageError


@contextmanager
def storage_errors(path: str | os.PathLike[str], action: str = "write", every: bool = False) -> Iterator[None]:
    """Turn an ``OSError`` of the disk (with ``every``, any ``OSError``) into a :class:`StorageError`."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS and not every:
            raise
        raise StorageError(path, exc, action) from None


@contextmanager
def atomic_path(path: str | os.PathLike[str], before_replace: Callable[[], object] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write and close; on success it becomes ``path``, on failure it is
    removed. ``before_replace`` runs just before the rename: a commit checks there that its base is current."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden; the pid keeps writers apart
    try:
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
        with storage_errors(path, every=True):  # the commit step: whatever fails here, the old file stands
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
        with suppress(OSError):  # make the rename durable (folders cannot be opened on Windows)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        with suppress(OSError):  # a cleanup that fails (read-only disk) must not hide the real error
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], mode: str = "w") -> Path:
    """Call ``write(fh)`` on a temporary file opened with ``mode`` (text: UTF-8), then put it at ``path``."""
    encoding, newline = (None, None) if "b" in mode else ("utf-8", "")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as fh:
        write(fh)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """``data`` at ``path``, whole or not at all (for content serialised in memory first)."""
    return write_atomic(path, lambda fh: fh.write(data), mode="wb")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    return write_atomic(path, lambda fh: fh.write(json.dumps(obj, indent=2, default=default) + "\n"))
