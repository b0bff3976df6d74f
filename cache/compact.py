"""``tlx cache compact``: under the cache lock, rewrite a cache's rows into one part, commit an
index onto it and delete the other parts (a kill leaves the old index valid; views are kept)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .catalog import now_iso
from .h5format import not_a_cache, parts_dir
from .h5write import h5_atomic
from .index import CacheIndex, Row, commit_id, read_index, write_index
from .lock import CacheLock
from .parts import part_datasets, remove_unused_parts
from .reader import open_snapshot


@dataclass
class CompactResult:
    path: str
    n_images: int
    parts_before: int
    parts_after: int
    bytes_before: int
    bytes_after: int
    seconds: float


def cache_bytes(path: Path) -> int:
    folder = parts_dir(path)
    parts = sum(p.stat().st_size for p in folder.glob("*.h5")) if folder.is_dir() else 0
    return path.stat().st_size + parts


def compact(path: str | Path, block_rows: int = 16384, on_wait=None) -> CompactResult:
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path} is not a cache file: pass one of the .h5 files `tlx info` lists")
    if reason := not_a_cache(path):
        raise CacheError(reason)
    with CacheLock(path, on_wait=on_wait):
        base = commit_id(path)  # checked again right before the commit
        index = read_index(path)
        if index.format < 2 or index.failures is None:
            raise CacheError(f"{path} is in the single-file format of an older tlx: re-run `tlx extract` to convert it")
        folder = parts_dir(path)
        known = {p.name for p in folder.glob("*.h5")} if folder.is_dir() else set()  # another writer's are not ours
        bytes_before = cache_bytes(path)
        name = f"part-compact-{time.strftime('%Y%m%d%H%M%S')}-{time.time_ns() % 1_000_000:06d}.h5"
        _copy_rows(path, folder / name, index, block_rows)
        columns = zip(index.paths, index.labels.tolist(), index.splits, index.hashes, index.stats.tolist(), strict=True)
        rows = [Row(p, label, split, h, tuple(st), name, i) for i, (p, label, split, h, st) in enumerate(columns)]
        written = ("tlx_format", "feature_space", "n_images", "views", "view_recipe")  # write_index sets them
        attrs = {k: v for k, v in index.attrs.items() if k not in written} | {"updated": now_iso()}
        write_index(path, rows, index.classes, index.failures, index.space, attrs, {name: len(rows)}, index.views, base)
        remove_unused_parts(path, {name} if rows else set(), known | {name})
    seconds = round(time.perf_counter() - started, 3)
    return CompactResult(str(path), len(rows), len(known), 1 if rows else 0, bytes_before, cache_bytes(path), seconds)


def _copy_rows(path: Path, target: Path, index: CacheIndex, block_rows: int) -> None:
    """Copy the index's rows into ``target`` through one snapshot: damage stops it, never copied."""
    n = len(index.paths)
    with open_snapshot(path) as snap, h5_atomic(target) as out:
        part_datasets(out, index.hashes, index.space)
        table = snap.table("features")
        for start in range(0, n, block_rows):
            rows = np.arange(start, min(start + block_rows, n), dtype=np.int64)
            out["features"][start : start + len(rows)] = table.read(rows).astype(index.space.store_dtype, copy=False)
