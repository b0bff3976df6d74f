"""One way to write a file so that a reader, or a crash, never sees half of it.

The content goes to a temporary name in the same folder, is flushed and fsynced, then
``os.replace`` puts it at the final name (atomic on POSIX and Windows). A kill -9 at any
moment leaves either the old file or the new one, never a mix. A write the disk refuses (full,
read-only, no permission, I/O error) raises :class:`~tlx.errors.StorageError` naming the final
path, and the temporary file is removed: the old file, if any, is untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ..errors import STORAGE_ERRNOS, StorageError, TlxError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process picks (the pid keeps writers apart)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def storage_errors(path: str | os.PathLike[str], action: str = "write", every: bool = False) -> Iterator[None]:
    """Turn an ``OSError`` of the disk (full, read-only, permission, I/O; with ``every``, any
    ``OSError``) into a one-line :class:`StorageError` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except TlxError:
        raise
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS and not every:
            raise
        raise StorageError(path, exc, action) from None


@contextmanager
def atomic_path(path: str | os.PathLike[str], before_replace: Callable[[], object] | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on failure it is removed.

    The caller writes and closes the file; this fsyncs it before the rename. A disk error while
    writing, syncing or renaming raises :class:`StorageError` for ``path``. ``before_replace``
    runs last before the rename: a commit checks there that its base is still current."""
    path = Path(path)
    tmp = temporary_name(path)
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
        fsync_dir(path.parent)
    finally:
        with suppress(OSError):  # a cleanup that fails (read-only disk) must not hide the real error
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """``data`` at ``path``, whole or not at all (for content serialised in memory first)."""
    return write_atomic(path, lambda fh: fh.write(data), mode="wb")


def _open(path: Path, mode: str) -> IO[Any]:
    """``open(path, mode)``, as UTF-8 without newline translation when ``mode`` is a text mode."""
    if "b" in mode:
        return open(path, mode)
    return open(path, mode, encoding="utf-8", newline="")


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[Any]], object], mode: str = "w") -> Path:
    """Call ``write(fh)`` on a temporary file opened with ``mode``, then put it at ``path``."""
    with atomic_path(path) as tmp, _open(tmp, mode) as fh:
        write(fh)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, default: Callable[[Any], Any] | None = None) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default) + "\n")
