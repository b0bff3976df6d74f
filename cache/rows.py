"""``CacheRows``: some rows of a cache's feature matrix, read block by block from one open
:class:`~tlx.cache.reader.Snapshot`, so a matrix larger than memory looks like a float32 array."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .reader import RowMap, Snapshot, open_snapshot, read_sorted

BLOCK_BYTES = 64 << 20  # about 64 MiB of float32 per block read


class CacheRows:
    def __init__(self, source: str | Path | Snapshot, rows=None, dataset: str = "features"):
        self.snapshot = source if isinstance(source, Snapshot) else open_snapshot(source)
        self.path, self.dataset = self.snapshot.path, dataset
        self._table: RowMap = self.snapshot.table(dataset)
        n_all, self.width = self._table.n, self._table.width
        self.rows = np.arange(n_all, dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if len(self.rows) and (self.rows[0] < 0 or self.rows[-1] >= n_all):
            raise IndexError(f"row numbers must lie in [0, {n_all}) for {self.path}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.width

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.width * 4

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, positions) -> CacheRows:
        """The rows at ``positions`` of this view (a new view of the same snapshot; nothing is read)."""
        return CacheRows(self.snapshot, self.rows[np.asarray(positions, dtype=np.int64)], self.dataset)

    def block_rows(self, block_bytes: int = BLOCK_BYTES) -> int:
        return max(1, block_bytes // (4 * max(self.width, 1)))

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("CacheRows supports contiguous row ranges only, e.g. rows[1000:2000]")
        return self._table.read(self.rows[key], CacheRows._read)

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """``(positions, float32 block)`` in order, ``block_rows`` rows at a time."""
        step = block_rows or self.block_rows()
        for start in range(0, len(self.rows), step):
            positions = slice(start, min(start + step, len(self.rows)))
            yield positions, self._table.read(self.rows[positions], CacheRows._read)

    def to_array(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for positions, block in self.blocks():
            out[positions] = block
        return out

    # one dataset's sorted rows as float32 (looked up at call time, so a test can watch the reads)
    _read = staticmethod(read_sorted)
