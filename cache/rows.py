"""Some rows of a cache's feature matrix, read block by block: a matrix larger than memory.

``CacheRows`` looks like a read-only ``(n, d)`` float32 matrix (``shape``, ``len``, slicing by
row ranges) but holds only the file name and the row numbers. Each block is read when it is
asked for, float16 caches are widened to float32 one block at a time, and ``to_array`` fills
one preallocated array, so loading never holds more than the result plus one block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .store import check_parts

BLOCK_BYTES = 64 << 20  # about 64 MiB of float32 per block read


class CacheRows:
    def __init__(self, path: str | Path, rows=None, dataset: str = "features"):
        self.path, self.dataset = Path(path), dataset
        with h5py.File(self.path, "r") as f:
            check_parts(f, self.path)
            n_all, self.width = f[dataset].shape
        self.rows = np.arange(n_all, dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if len(self.rows) and (self.rows[0] < 0 or self.rows[-1] >= n_all):
            raise IndexError(f"row numbers must lie in [0, {n_all}) for {self.path}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.width

    @property
    def nbytes(self) -> int:
        """The size of this matrix as float32 in memory."""
        return len(self.rows) * self.width * 4

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions) -> CacheRows:
        """The rows at ``positions`` of this view (a new view; nothing is read)."""
        view = object.__new__(CacheRows)
        view.path, view.dataset, view.width = self.path, self.dataset, self.width
        view.rows = np.sort(self.rows[np.asarray(positions, dtype=np.int64)])
        return view

    def block_rows(self, block_bytes: int = BLOCK_BYTES) -> int:
        return max(1, block_bytes // (4 * max(self.width, 1)))

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("CacheRows supports contiguous row ranges only, e.g. rows[1000:2000]")
        with h5py.File(self.path, "r") as f:
            return self._read(f[self.dataset], self.rows[key])

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """``(positions, float32 block)`` in order, ``block_rows`` rows at a time."""
        step = block_rows or self.block_rows()
        with h5py.File(self.path, "r") as f:
            ds = f[self.dataset]
            for start in range(0, len(self.rows), step):
                positions = slice(start, min(start + step, len(self.rows)))
                yield positions, self._read(ds, self.rows[positions])

    def to_array(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for positions, block in self.blocks():
            out[positions] = block
        return out

    @staticmethod
    def _read(ds, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted) of ``ds`` as float32. The span they cover is read in contiguous
        windows of at most twice their count (h5py reads ranges far faster than scattered
        points), and the wanted rows are picked from each window."""
        out = np.empty((len(rows), ds.shape[1]), dtype=np.float32)
        window = max(2 * len(rows), 1024)
        buffer = np.empty((min(window, ds.shape[0]), ds.shape[1]), dtype=ds.dtype)
        done = 0
        while done < len(rows):
            first = int(rows[done])
            end = int(np.searchsorted(rows, first + window, side="left"))
            span = int(rows[end - 1]) + 1 - first
            ds.read_direct(buffer, np.s_[first : first + span], np.s_[0:span])  # no temporary array
            if buffer.dtype == np.float32:
                np.take(buffer, rows[done:end] - first, axis=0, out=out[done:end], mode="clip")
            else:  # float16 caches: widened here, one block at a time
                out[done:end] = buffer[rows[done:end] - first]
            done = end
        return out
