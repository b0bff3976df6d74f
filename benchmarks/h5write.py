"""Benchmark: what does writing HDF5 through tlx's guarded file object cost?

Part files and indexes are written through h5py's ``fileobj`` driver over a file object that
never fails towards HDF5 (``tlx.cache.h5write``), so that a full disk is an error, not a
segmentation fault. This times one part of ROWS x WIDTH float32 vectors written that way and
with h5py's own (sec2) driver, both fsynced, best of REPEATS.

    python benchmarks/h5write.py [--rows 4096] [--width 2048] [--repeats 5] [--dir /tmp]

Prints one line per way and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine


def fill(f, x: np.ndarray, hashes: np.ndarray) -> None:
    f.create_dataset("features", data=x, chunks=(max(1, (256 * 1024) // (4 * x.shape[1])), x.shape[1]))
    f.create_dataset("content_sha256", data=hashes)


def sec2(path: Path, x, hashes) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        fill(f, x, hashes)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def guarded(path: Path, x, hashes) -> None:
    from tlx.cache.h5write import h5_atomic

    with h5_atomic(path) as f:
        fill(f, x, hashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((args.rows, args.width), dtype=np.float32)
    hashes = np.array([f"{i:064x}" for i in range(args.rows)], dtype="S64")
    best = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeats):
            for name, write in (("h5py_sec2", sec2), ("tlx_guarded", guarded)):
                started = time.perf_counter()
                write(Path(tmp) / f"{name}.h5", x, hashes)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    mib = x.nbytes / 2**20
    for name, seconds in best.items():
        print(f"{name:12s} {seconds:.3f} s  ({mib / seconds:.0f} MiB/s) for a {args.rows} x {args.width} part")
    print(json.dumps({"machine": machine(), "rows": args.rows, "width": args.width, "seconds": best}))


if __name__ == "__main__":
    main()
