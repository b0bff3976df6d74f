"""A cache written through the store API alone (no network, no images): every row's vector,
label and path are functions of its content hash, so a row whose parts come from two versions
of the cache is detectable. Used by the reader tests, in this process and in child processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tlx.cache.catalog import now_iso
from tlx.cache.h5format import parts_dir
from tlx.cache.index import Failures, Row, read_index, write_index
from tlx.cache.lock import CacheLock
from tlx.cache.parts import remove_unused_parts, write_part
from tlx.cache.space import FeatureSpace, Preprocessing

WIDTH = 8
SPACE = FeatureSpace(
    "synthetic", "0" * 64, "synthetic", Preprocessing(32, 1.0, "bilinear", (0.5,) * 3, (0.5,) * 3), "avg", WIDTH
)
CLASSES = ["a", "b", "c"]


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def vector(h: str) -> np.ndarray:
    x = np.zeros(WIDTH, np.float32)
    x[0], x[1] = int(h[:6], 16), int(h[6:12], 16)  # below 2**24: exact in float32
    return x


def label(h: str) -> int:
    return int(h[12], 16) % len(CLASSES)


def names_of_round(r: int) -> list[str]:
    """Round ``r``'s images: more each round, a third of them with new content every other round;
    in hash order, so rows move between versions."""
    names = [f"img{k:04d}.v{r // 2 if k % 3 == 0 else 0}.png" for k in range(12 + 4 * r)]
    return sorted(names, key=sha)


def commit(path: Path, names: list[str], tag: str, dataset: str = "synthetic", updated: str = "") -> None:
    """An index over ``names``, as an extract makes it: new contents go to a new part, the index
    is replaced, and the parts no row uses are deleted."""
    with CacheLock(path):
        prev = read_index(path) if path.exists() else None
        where = prev.source_of_hash() if prev is not None else {}
        sizes = dict(zip(prev.part_names, prev.part_rows, strict=True)) if prev is not None else {}
        new = sorted({sha(n) for n in names} - where.keys())
        if new:
            part = f"part-{tag}.h5"
            write_part(parts_dir(path), part, new, np.stack([vector(h) for h in new]), SPACE)
            where.update({h: (part, i) for i, h in enumerate(new)})
            sizes[part] = len(new)
        rows = [Row(n, label(sha(n)), "", sha(n), (1, 1, 1, 1), *where[sha(n)]) for n in names]
        attrs = {"dataset_name": dataset, "updated": updated or now_iso()}
        write_index(path, rows, CLASSES, Failures(), SPACE, attrs, sizes)
        remove_unused_parts(path, {r.part for r in rows})


def mismatches(paths: list[str], hashes: list[str], y: np.ndarray, X: np.ndarray) -> int:
    """Rows whose path, hash, label and vector do not all belong together."""
    bad = 0
    for p, h, lab, x in zip(paths, hashes, y.tolist(), X, strict=True):
        if sha(p) != h or label(h) != lab or not np.array_equal(x, vector(h)):
            bad += 1
    return bad
