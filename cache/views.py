"""Augmented view vectors in the cache: immutable part files of their own, listed by the index.

* ``<cache>.h5.views/*.h5`` hold view vectors: ``features`` (n x D), ``content_sha256`` (n) and
  ``view`` (n, the view index >= 1), with the feature space and the view recipe in the
  attributes. They are parts like the feature parts, written by the same
  :class:`~tlx.cache.parts.PartWriter` (``VIEW_PARTS``: two key columns instead of one): written
  once (temporary name, fsync, rename), one per run and rank, and a killed run's parts are taken
  back by the next run.
* The index (``<cache>.h5``, the commit point) has a ``views`` group when the cache has views
  (:mod:`tlx.cache.viewtable`): ``image`` (the main row each view belongs to), ``view``, where
  each vector lives (``source/part``, ``source/row``, ``parts/names``, ``parts/rows``), and
  ``features``, a virtual dataset over the view parts, ordered by main row then view index. Its
  attributes record the recipe and K (``count``); the index's own attributes repeat them
  (``views``, ``view_recipe``).

A view vector is keyed by (content sha256, view index, recipe id): the main features and the
feature space of a cache are the same with or without views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .h5format import views_dir
from .index import CacheIndex, Row
from .parts import VIEW_PARTS, PartWriter, remove_unused_files, unreferenced_parts
from .space import FeatureSpace
from .verify import DAMAGED, MISSING, check_part
from .viewtable import Key, ViewTable

__all__ = [
    "Key",
    "ViewSources",
    "ViewTable",
    "ViewWriter",
    "plan_views",
    "remove_unused_view_parts",
    "view_sources",
    "views_dir",
]


class ViewWriter(PartWriter):
    """The :class:`~tlx.cache.parts.PartWriter` of one process's new view vectors: keys are
    (sha256, view) and the parts record ``recipe``; a part of another recipe is never taken back."""

    def __init__(self, folder: Path, prefix: str, space, recipe: dict, flush_rows: int = 4096, flush_seconds=5.0):
        attrs = {"view_recipe": recipe}
        super().__init__(folder, prefix, space, flush_rows, flush_seconds, kind=VIEW_PARTS, attrs=attrs)
        self.recipe = recipe


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


def view_sources(path: Path, prev: CacheIndex | None, space: FeatureSpace, recipe: dict) -> ViewSources:
    """The previous index's views of this recipe, and the view parts of runs that did not finish.
    Unreferenced view parts of another space or recipe, and half-written ones, are deleted."""
    src = ViewSources()
    table = prev.views if prev is not None else None
    if prev is not None and table is not None and table.recipe == recipe:
        damaged = _damaged_view_parts(path, table)  # their images are read again for their views
        src.prev = {k: s for k, s in table.sources(prev.hashes).items() if s[0] not in damaged}
        src.sizes.update(table.sizes)
    used = set(table.part) if table is not None else set()
    for name, keys in unreferenced_parts(views_dir(path), used, space, VIEW_PARTS, {"view_recipe": recipe}):
        src.sizes[name] = len(keys)
        for row, key in enumerate(keys):
            if key not in src.prev:
                src.resumed.setdefault(key, (name, row))
    return src


def _damaged_view_parts(path: Path, table: ViewTable) -> set[str]:
    """The view parts ``table`` names that fail verification (read whole, checksums checked)."""
    folder = views_dir(path)
    return {name for name in table.sizes if check_part(folder / name)[0] in (DAMAGED, MISSING)}


def remove_unused_view_parts(path: Path, keep: set[str]) -> int:
    return remove_unused_files(views_dir(path), keep)


def plan_views(rows: list[Row], count: int, recipe: dict, src: ViewSources) -> tuple[ViewTable | None, dict]:
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
