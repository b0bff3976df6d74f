"""Vectors the run's cache already holds: an image whose bytes are there gets the vector the head was validated on."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np

from ..errors import CacheError
from ..heads.runs import run_cache


def cached_features(run, hashes: list[str | None]) -> tuple[dict[int, np.ndarray], str]:
    """``({input index: vector}, note)`` for the inputs the cache holds, read from one version of it."""
    cache = run_cache(run)
    if cache is None:
        return {}, f"the run's cache {run.info.get('cache')!r} is gone; computing every image"
    from ..cache.index import index_of
    from ..cache.reader import open_snapshot

    try:
        with open_snapshot(cache) as snap:
            index = index_of(snap.index, cache)
            if index.space.identity() != run.space.identity():
                changed = run.space.difference(index.space)
                return {}, f"{cache} now holds another feature space ({changed}); computing every image"
            row_of = {h: i for i, h in enumerate(index.hashes)}
            wanted = {i: row_of[h] for i, h in enumerate(hashes) if h is not None and h in row_of}
            if not wanted:
                return {}, ""
            vectors = read_rows(snap, list(wanted.values()))
    except CacheError as exc:
        return {}, f"{exc}; computing every image"
    return dict(zip(wanted, vectors, strict=True)), ""


def read_rows(cache, rows: Sequence[int], block: int = 4096) -> np.ndarray:
    """``features[rows]`` of a cache (a path or an open ``Snapshot``), ``block`` rows at a time (flat memory)."""
    from ..cache.reader import Snapshot, open_snapshot

    with nullcontext(cache) if isinstance(cache, Snapshot) else open_snapshot(cache) as snap:
        table = snap.table("features")
        idx = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(idx), table.width), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        for start in range(0, len(idx), block):
            mine = order[start : start + block]
            out[mine] = table.read(idx[mine])
        return out
