"""Writing an HDF5 file so that a full or failing disk is an error, never a crash: when a write
of HDF5's own driver failed, h5py only warned (a half-written file looked complete) and HDF5
segfaulted at exit. So HDF5 writes through a file object that never fails towards it, and the
first error is raised once HDF5 has closed."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from ..common.atomic import atomic_path
from ..errors import StorageError


class _KeepFirstError(io.RawIOBase):
    """A read/write file over a descriptor that keeps its first ``OSError`` and from then on only
    pretends (writes move the position, unwritten reads give zeros): HDF5 never sees a failure."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd
        self.pos = 0
        self.size = 0  # as far as HDF5 knows: the end of everything it wrote, even dropped
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    writable = seekable = readable

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _attempt(self, call: Callable, *args):
        """``call(*args)``, or None once an error is kept: the first ``OSError`` is kept, not raised."""
        if self.error is None:
            try:
                return call(*args)
            except OSError as exc:
                self.error = exc
        return None

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self.pos))
        got = (self._attempt(os.pread, self.fd, n, self.pos) if n else None) or b""
        view[: len(got)] = got
        view[len(got) : n] = bytes(n - len(got))
        self.pos += n
        return n

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            done += self._attempt(os.pwrite, self.fd, view[done:], self.pos + done) or 0
        self.pos += len(view)
        self.size = max(self.size, self.pos)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        self.size = self.pos if size is None else size
        self._attempt(os.ftruncate, self.fd, self.size)
        return self.size

    def flush(self) -> None:
        pass  # unbuffered: every write went straight to the descriptor


@contextmanager
def h5_atomic(path: Path, before_replace: Callable[[], object] | None = None) -> Iterator[h5py.File]:
    """A new HDF5 file to fill, fsynced and renamed to ``path``; on failure (the body's, or the
    disk's as :class:`StorageError`) nothing is left behind."""
    with atomic_path(path, before_replace) as tmp:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            guard = _KeepFirstError(fd)
            with h5py.File(guard, "w", libver="latest") as f:
                yield f
        finally:
            os.close(fd)
        if guard.error is not None:
            raise StorageError(path, guard.error)
