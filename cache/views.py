"""Augmented view vectors in the cache: immutable part files of their own, listed by the index.

* ``<cache>.h5.views/*.h5`` hold view vectors: ``features`` (n x D), ``content_sha256`` (n) and
  ``view`` (n, the view index >= 1), with the feature space and the view recipe in the
  attributes. Like the feature parts they are written once (temporary name, fsync, rename),
  one per run and rank, and a killed run's parts are taken back by the next run.
* The index (``<cache>.h5``, the commit point) has a ``views`` group when the cache has views:
  ``image`` (the main row each view belongs to), ``view``, where each vector lives
  (``source/part``, ``source/row``, ``parts/names``, ``parts/rows``), and ``features``, a virtual
  dataset over the view parts, ordered by main row then view index. Its attributes record the
  recipe and K (``count``); the index's own attributes repeat them (``views``, ``view_recipe``).

A view vector is keyed by (content sha256, view index, recipe id): the main features and the
feature space of a cache are the same with or without views.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .h5write import h5_atomic
from .space import FeatureSpace
from .verify import DAMAGED, MISSING, check_part

Key = tuple[str, int]  # (content sha256, view index)


def views_dir(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".views")


@dataclass
class ViewTable:
    """The views an index lists: for each view row, its main row, its index and its source."""

    recipe: dict  # ViewRecipe.to_dict()
    count: int  # K: views 1..K of every row
    image: np.ndarray  # int64 main row of each view row
    view: np.ndarray  # int16 view index (1..K)
    part: list[str]  # part file name of each view row
    part_row: np.ndarray  # int64 row in that part
    sizes: dict[str, int] = field(default_factory=dict)  # rows of each part named

    def sources(self, hashes: Sequence[str]) -> dict[Key, tuple[str, int]]:
        """(sha256, view) -> (part, row), given the index's content hashes."""
        rows = zip(self.image.tolist(), self.view.tolist(), self.part, self.part_row.tolist(), strict=True)
        return {(hashes[i], int(v)): (p, int(r)) for i, v, p, r in rows}

    def same_as(self, other: ViewTable | None) -> bool:
        return (
            other is not None
            and self.recipe == other.recipe
            and self.count == other.count
            and np.array_equal(self.image, other.image)
            and np.array_equal(self.view, other.view)
            and self.part == other.part
            and np.array_equal(self.part_row, other.part_row)
        )


def write_group(f, path: Path, table: ViewTable, space: FeatureSpace) -> None:
    """The index's ``views`` group (called by ``store.write_index`` inside its temporary file)."""
    g = f.create_group("views")
    used = sorted(set(table.part))
    number = {n: k for k, n in enumerate(used)}
    folder, width = views_dir(path).name, space.feature_dim
    store.virtual_rows(g, "features", folder, table.part, table.part_row, table.sizes, width, space.store_dtype)
    store._array(g, "image", np.asarray(table.image, dtype=np.int64))
    store._array(g, "view", np.asarray(table.view, dtype=np.int16))
    store._array(g, "source/part", np.array([number[p] for p in table.part], dtype=np.int32))
    store._array(g, "source/row", np.asarray(table.part_row, dtype=np.int64))
    store._strings(g, "parts/names", used)
    store._array(g, "parts/rows", np.array([table.sizes[n] for n in used], dtype=np.int64))
    g.attrs["count"] = table.count
    g.attrs["recipe"] = json.dumps(table.recipe, sort_keys=True)


def read_group(f) -> ViewTable | None:
    if "views" not in f:
        return None
    g = f["views"]
    names = store.decode_strings(g["parts/names"])
    return ViewTable(
        recipe=json.loads(g.attrs["recipe"]),
        count=int(g.attrs["count"]),
        image=g["image"][()].astype(np.int64),
        view=g["view"][()].astype(np.int16),
        part=[names[k] for k in g["source/part"][()].tolist()],
        part_row=g["source/row"][()].astype(np.int64),
        sizes=dict(zip(names, g["parts/rows"][()].tolist(), strict=True)),
    )


def check_view_parts(f, path: Path) -> None:
    """Every view part the index names must be there (a missing one would read as NaN)."""
    if "views" not in f:
        return
    folder = views_dir(path)
    for name in store.decode_strings(f["views/parts/names"]):
        if not (folder / name).is_file():
            raise store.UnreadableCacheError(
                path, f"{path} is damaged: its view part {folder.name}/{name} is missing (deleted or not copied)"
            )


# --------------------------------------------------------------------------- parts


def write_view_part(folder: Path, name: str, keys: Sequence[Key], features: np.ndarray, space, recipe: dict) -> Path:
    n, width = len(keys), space.feature_dim
    with h5_atomic(folder / name) as f:
        chunk = (min(store._rows_per_chunk(width), max(n, 1)), width)
        rows = (max(1, min(n, 8192)),)  # chunked, so that every chunk carries a fletcher32 checksum
        f.create_dataset("features", shape=(n, width), dtype=space.store_dtype, chunks=chunk, fletcher32=True)
        f.create_dataset("content_sha256", shape=(n,), dtype=store.HASH, chunks=rows, fletcher32=True)
        f.create_dataset("view", shape=(n,), dtype=np.int16, chunks=rows, fletcher32=True)
        if n:
            f["features"][:] = features.astype(space.store_dtype, copy=False)
            f["content_sha256"][:] = np.array([h for h, _ in keys], dtype="S64")
            f["view"][:] = np.array([v for _, v in keys], dtype=np.int16)
        f.attrs["tlx_view_part"] = 1
        f.attrs["feature_space"] = json.dumps(space.to_dict())
        f.attrs["view_recipe"] = json.dumps(recipe, sort_keys=True)
    return folder / name


def read_view_keys(path: Path, space: FeatureSpace, recipe: dict) -> list[Key] | None:
    """The keys of a complete view part of this space and recipe; None for another one or a damaged file."""
    try:
        with store.open_h5(path) as f:
            if json.loads(f.attrs["feature_space"]) != space.to_dict():
                return None
            if json.loads(f.attrs["view_recipe"]) != recipe:
                return None
            hashes = store.decode_strings(f["content_sha256"])
            return list(zip(hashes, f["view"][()].astype(int).tolist(), strict=True))
    except (OSError, KeyError, ValueError):
        return None


class ViewWriter:
    """Buffers one process's new view vectors and flushes them as a view part every
    ``flush_rows`` rows or ``flush_seconds`` seconds (a crash loses at most that much)."""

    def __init__(self, folder: Path, prefix: str, space, recipe: dict, flush_rows: int = 4096, flush_seconds=5.0):
        self.folder, self.prefix, self.space, self.recipe = folder, prefix, space, recipe
        self.flush_rows, self.flush_seconds = max(1, flush_rows), flush_seconds
        self._keys: list[Key] = []
        self._feats: list[np.ndarray] = []
        self._last = time.monotonic()
        self.parts: list[tuple[str, list[Key]]] = []
        self.n_rows = 0

    def add(self, keys: Sequence[Key], features: np.ndarray) -> None:
        if not len(keys):
            return
        self._keys += list(keys)
        self._feats.append(np.asarray(features, dtype=np.float32))
        self.n_rows += len(keys)
        if len(self._keys) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._keys:
            name = f"{self.prefix}-{len(self.parts):06d}.h5"
            write_view_part(self.folder, name, self._keys, np.concatenate(self._feats), self.space, self.recipe)
            self.parts.append((name, self._keys))
            self._keys, self._feats = [], []
        self._last = time.monotonic()

    def close(self) -> list[tuple[str, list[Key]]]:
        self.flush()
        return self.parts


@dataclass
class ViewSources:
    """Where the vector of each (sha256, view) lives: the previous index, a killed run's parts, this run."""

    prev: dict[Key, tuple[str, int]] = field(default_factory=dict)
    resumed: dict[Key, tuple[str, int]] = field(default_factory=dict)
    new: dict[Key, tuple[str, int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def have(self) -> dict[str, int]:
        """sha256 -> bit mask of the views whose vectors exist (bit v for view v)."""
        masks: dict[str, int] = {}
        for table in (self.prev, self.resumed):
            for h, v in table:
                masks[h] = masks.get(h, 0) | (1 << v)
        return masks

    def add_new(self, parts: list[tuple[str, list[Key]]]) -> None:
        for name, keys in parts:
            self.sizes[name] = len(keys)
            for row, key in enumerate(keys):
                self.new.setdefault(key, (name, row))

    def find(self, key: Key) -> tuple[tuple[str, int], str] | None:
        for kind, table in (("reused", self.prev), ("resumed", self.resumed), ("new", self.new)):
            if key in table:
                return table[key], kind
        return None


def view_sources(path: Path, prev: store.CacheIndex | None, space: FeatureSpace, recipe: dict) -> ViewSources:
    """The previous index's views of this recipe, and the view parts of runs that did not finish.
    Unreferenced view parts of another space or recipe, and half-written ones, are deleted."""
    src = ViewSources()
    table = prev.views if prev is not None else None
    if prev is not None and table is not None and table.recipe == recipe:
        damaged = _damaged_view_parts(path, table)  # their images are read again for their views
        src.prev = {k: s for k, s in table.sources(prev.hashes).items() if s[0] not in damaged}
        src.sizes.update(table.sizes)
    used = set(table.part) if table is not None else set()
    folder = views_dir(path)
    if not folder.is_dir():
        return src
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for part in sorted(folder.glob("*.h5")):
        if part.name in used:
            continue
        keys = read_view_keys(part, space, recipe)
        if keys is None:
            part.unlink(missing_ok=True)
            continue
        src.sizes[part.name] = len(keys)
        for row, key in enumerate(keys):
            if key not in src.prev:
                src.resumed.setdefault(key, (part.name, row))
    return src


def _damaged_view_parts(path: Path, table: ViewTable) -> set[str]:
    """The view parts ``table`` names that fail verification (read whole, checksums checked)."""
    folder = views_dir(path)
    return {name for name in table.sizes if check_part(folder / name)[0] in (DAMAGED, MISSING)}


def remove_unused_view_parts(path: Path, keep: set[str]) -> int:
    return store.remove_unused_files(views_dir(path), keep)


def plan_views(rows: list[store.Row], count: int, recipe: dict, src: ViewSources) -> tuple[ViewTable | None, dict]:
    """The index's view table for ``rows`` (views 1..count of each), and how many came from where.
    Rows whose views are missing (cannot happen after a complete run) raise."""
    counts = {"reused": 0, "resumed": 0, "new": 0}
    if count == 0:
        return None, counts
    image, view, part, part_row = [], [], [], []
    for i, row in enumerate(rows):
        for v in range(1, count + 1):
            found = src.find((row.sha256, v))
            if found is None:
                from ..errors import CacheError

                raise CacheError(f"internal error: no vector for view {v} of content {row.sha256[:12]}")
            (p, r), kind = found
            counts[kind] += 1
            image.append(i)
            view.append(v)
            part.append(p)
            part_row.append(r)
    sizes = {n: src.sizes[n] for n in set(part)}
    table = ViewTable(
        recipe, count, np.array(image, np.int64), np.array(view, np.int16), part, np.array(part_row, np.int64), sizes
    )
    return table, counts
