"""The cache lock: one writer of a cache at a time (extract, compact)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..common.atomic import storage_errors
from ..errors import StorageError


class CacheLock:
    """Advisory OS lock on ``<cache>.lock`` (released when its holder dies, even by kill -9). On a
    read-only file system nobody can write: no lock is taken, ``read_only`` holds the error."""

    def __init__(self, cache_path: Path, on_wait: Callable[[str], None] | None = None):
        self.path = cache_path.with_name(cache_path.name + ".lock")
        self.on_wait = on_wait
        self._lock: Any = None
        self.read_only: StorageError | None = None

    def __enter__(self):
        try:
            self._acquire()
        except StorageError as exc:
            if exc.errno != errno.EROFS:
                raise
            self._lock, self.read_only = None, exc
        return self

    def _acquire(self) -> None:
        import filelock  # here, not at the top: reading a cache needs no locking at all

        with storage_errors(self.path, "create the lock file"):
            told = False
            while True:
                self._lock = filelock.FileLock(self.path)
                try:
                    self._lock.acquire(timeout=0)
                except filelock.Timeout:
                    if self.on_wait and not told:
                        busy = self.path.with_suffix("")
                        self.on_wait(f"another tlx extract is writing {busy}; waiting for it to finish")
                        told = True
                    self._lock.acquire()
                if self._locks_the_file_at_path():
                    return
                self._lock.release()  # removed or replaced while this process waited: lock the new one

    def _locks_the_file_at_path(self) -> bool:
        """A lock on a file someone deleted excludes nobody: the next process locks a new file."""
        fd = getattr(getattr(self._lock, "_context", None), "lock_file_fd", None)
        if not isinstance(fd, int):
            return True  # this filelock does not expose it; the commit's base check still holds
        try:
            return os.path.samestat(os.stat(self.path), os.fstat(fd))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.release()
