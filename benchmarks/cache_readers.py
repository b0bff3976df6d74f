"""What the reader and checksum work costs: an eager ``load_features`` of a cache in parts
(CPU seconds, the least of 3: wall time is at the mercy of a shared machine), and the full
verification every extract now runs on the parts its index names (read whole, each chunk's
fletcher32 checked). Run with ``python benchmarks/cache_readers.py [ROWS] [FOLDER]``;
prints measured numbers only."""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tlx
from tlx.cache.catalog import now_iso
from tlx.cache.h5format import parts_dir
from tlx.cache.incremental import _damaged_parts
from tlx.cache.index import Failures, Row, read_index, write_index
from tlx.cache.parts import write_part
from tlx.cache.space import FeatureSpace, Preprocessing

WIDTH, PARTS = 512, 4


def make(path: Path, rows: int) -> None:
    space = FeatureSpace(
        "synthetic", "0" * 64, "synthetic", Preprocessing(32, 1.0, "bilinear", (0.5,) * 3, (0.5,) * 3), "avg", WIDTH
    )
    rng = np.random.default_rng(0)
    index_rows, sizes = [], {}
    for p in range(PARTS):
        n = rows // PARTS
        hashes = [hashlib.sha256(f"{p}-{i}".encode()).hexdigest() for i in range(n)]
        name = f"part-{p}.h5"
        write_part(parts_dir(path), name, hashes, rng.normal(size=(n, WIDTH)).astype(np.float32), space)
        sizes[name] = n
        index_rows += [Row(f"{p}/{i}.png", 0, "", h, (1, 1, 1), name, i) for i, h in enumerate(hashes)]
    attrs = {"dataset_name": "synthetic", "updated": now_iso()}
    write_index(path, index_rows, ["a"], Failures(), space, attrs, sizes)


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    folder = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    path = folder / "synthetic.h5"
    if not path.exists():
        make(path, rows)
    mb = rows * WIDTH * 4 / 1e6
    started = time.perf_counter()
    damaged = _damaged_parts(path, read_index(path))
    seconds = time.perf_counter() - started
    print(f"verify {PARTS} parts, {mb:.0f} MB: {seconds:.2f} s wall ({mb / seconds:.0f} MB/s), damaged: {len(damaged)}")
    best = min(_cpu_seconds(lambda: tlx.load_features(path).X) for _ in range(3))
    print(f"load_features eager, {rows} x {WIDTH}: {best:.2f} s CPU ({mb / best:.0f} MB/s)")


def _cpu_seconds(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


if __name__ == "__main__":
    main()
