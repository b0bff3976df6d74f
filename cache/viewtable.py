"""The ``views`` group of an index: which view vector of which row lives where."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .h5format import decode_strings, views_dir, write_array, write_sources
from .space import FeatureSpace

Key = tuple[str, int]  # (content sha256, view index)


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
            and (self.recipe, self.count, self.part) == (other.recipe, other.count, other.part)
            and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in ("image", "view", "part_row"))
        )


def write_group(f, path: Path, table: ViewTable, space: FeatureSpace) -> None:
    """The index's ``views`` group (written by ``index.write_index`` inside its temporary file)."""
    g = f.create_group("views")
    folder = views_dir(path).name
    write_sources(g, folder, table.part, table.part_row, table.sizes, space.feature_dim, space.store_dtype)
    write_array(g, "image", np.asarray(table.image, dtype=np.int64))
    write_array(g, "view", np.asarray(table.view, dtype=np.int16))
    g.attrs["count"] = table.count
    g.attrs["recipe"] = json.dumps(table.recipe, sort_keys=True)


def read_group(f) -> ViewTable | None:
    if "views" not in f:
        return None
    g = f["views"]
    names = decode_strings(g["parts/names"])
    return ViewTable(
        recipe=json.loads(g.attrs["recipe"]),
        count=int(g.attrs["count"]),
        image=g["image"][()].astype(np.int64),
        view=g["view"][()].astype(np.int16),
        part=[names[k] for k in g["source/part"][()].tolist()],
        part_row=g["source/row"][()].astype(np.int64),
        sizes=dict(zip(names, g["parts/rows"][()].tolist(), strict=True)),
    )
