"""Augmented view vectors: view parts keyed by (content sha256, view index) that record their
recipe, listed by the index's ``views`` group. The main features are the same with or without."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .h5format import views_dir
from .index import CacheIndex, Row, ViewTable
from .parts import VIEW_PARTS, PartWriter, Sources, unreferenced_parts
from .space import FeatureSpace
from .verify import damaged_parts

ViewSources = Sources  # keyed by (sha256, view)


class ViewWriter(PartWriter):
    """The PartWriter of view vectors: keys (sha256, view), parts that record their recipe."""

    def __init__(self, folder: Path, prefix: str, space, recipe: dict, flush_rows: int = 4096, flush_seconds=5.0):
        super().__init__(folder, prefix, space, flush_rows, flush_seconds, VIEW_PARTS, {"view_recipe": recipe})


def view_sources(path: Path, prev: CacheIndex | None, space: FeatureSpace, recipe: dict) -> Sources:
    """The previous index's views of this recipe, and the view parts of runs that did not finish."""
    src = Sources()
    table = prev.views if prev is not None else None
    if prev is not None and table is not None and table.recipe == recipe:
        # the images of damaged view parts are read again for their views
        damaged = damaged_parts(views_dir(path), dict.fromkeys(table.sizes))
        src.prev = {k: s for k, s in table.sources(prev.hashes).items() if s[0] not in damaged}
        src.sizes.update(table.sizes)
    used = set(table.part) if table is not None else set()
    for name, keys in unreferenced_parts(views_dir(path), used, space, VIEW_PARTS, {"view_recipe": recipe}):
        src.sizes[name] = len(keys)
        for row, key in enumerate(keys):
            if key not in src.prev:
                src.resumed.setdefault(key, (name, row))
    return src


def plan_views(rows: list[Row], count: int, recipe: dict, src: Sources) -> tuple[ViewTable | None, dict]:
    """The index's view table for ``rows`` (views 1..count of each), and how many came from where."""
    counts = {"reused": 0, "resumed": 0, "new": 0}
    if count == 0:
        return None, counts
    image = np.repeat(np.arange(len(rows), dtype=np.int64), count)
    view = np.tile(np.arange(1, count + 1, dtype=np.int16), len(rows))
    found = [src.find((rows[i].sha256, v)) for i, v in zip(image.tolist(), view.tolist(), strict=True)]
    for _, kind in found:
        counts[kind] += 1
    part = [p for (p, _), _ in found]
    part_row = np.array([r for (_, r), _ in found], dtype=np.int64)
    return ViewTable(recipe, count, image, view, part, part_row, {n: src.sizes[n] for n in set(part)}), counts
