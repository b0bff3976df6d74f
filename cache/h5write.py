"""Writing an HDF5 file so that a full or failing disk is an error, never a crash.

When a write of HDF5's own file driver fails (no space left, I/O error), the library keeps the
file open with metadata it cannot flush: h5py then reports the failure only while
deallocating (a warning, so the half-written file looked complete and was renamed into
place), and the process died with a segmentation fault when HDF5 tried again at exit. Here
HDF5 writes through a Python file object instead (h5py's ``fileobj`` driver) that never fails
towards HDF5: the first error is kept, later writes are dropped, HDF5 closes normally, and
then the kept error is raised as a :class:`~tlx.errors.StorageError` for the final path while
:func:`~tlx.common.atomic.atomic_path` removes the temporary file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from ..common.atomic import atomic_path
from ..errors import StorageError


class _KeepFirstError(io.RawIOBase):
    """A read/write file that records its first ``OSError`` and from then on only pretends to
    write (moving the position as a write would), so HDF5 never sees a failed write."""

    def __init__(self, fh: io.BufferedRandom):
        super().__init__()
        self.fh = fh
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def readinto(self, buffer) -> int:
        return self.fh.readinto(buffer)

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if self.error is None:
            try:
                self.fh.write(data)
                return n
            except OSError as exc:
                self.error = exc
        self.fh.seek(n, io.SEEK_CUR)
        return n

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as exc:
                self.error = exc
        return self.tell() if size is None else size

    def flush(self) -> None:
        if self.error is None and not self.fh.closed:
            try:
                self.fh.flush()
            except OSError as exc:
                self.error = exc


@contextmanager
def h5_atomic(path: Path, before_replace: Callable[[], object] | None = None) -> Iterator[h5py.File]:
    """A new HDF5 file to fill; on success it is fsynced and renamed to ``path``, on failure
    (the body's, or the disk's as :class:`StorageError`) nothing is left behind.
    ``before_replace``: see :func:`~tlx.common.atomic.atomic_path`."""
    with atomic_path(path, before_replace) as tmp, open(tmp, "w+b") as raw:
        guard = _KeepFirstError(raw)
        with h5py.File(guard, "w", libver="latest") as f:
            yield f
        guard.flush()
        if guard.error is not None:
            raise StorageError(path, guard.error)
