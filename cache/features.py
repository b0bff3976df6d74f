"""``tlx.load_features``: the cached features as numpy arrays (h5py and numpy only). A
``Features`` reads lazy rows and views from the one committed version of the cache it opened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .catalog import default_cache_dir, pick_cache
from .h5format import not_a_cache
from .index import index_of
from .reader import Snapshot, open_cache
from .rows import CacheRows
from .space import FeatureSpace


@dataclass
class Features:
    X: np.ndarray | CacheRows  # float32 (N, D); a CacheRows when loaded with lazy=True
    y: np.ndarray  # int64 (N,), indices into ``classes``
    classes: list[str]
    paths: list[str]  # relative to ``dataset_root``
    split: list[str]  # "train"/"val"/"test", or "" when the data has no split
    sha256: list[str]
    space: FeatureSpace
    path: Path  # the cache file
    attrs: dict = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # images that could not be read -> why
    rows: np.ndarray | None = None  # the cache's row number of each row here (None: all, in order)
    # the open version these rows came from: views() and lazy reads see it whatever is committed since
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def dataset_root(self) -> str:
        return self.attrs.get("dataset_root", "")

    @property
    def lazy(self) -> bool:
        return isinstance(self.X, CacheRows)

    def subset(self, mask) -> Features:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, dtype=np.int64)
        if self.lazy:
            idx = np.sort(idx)  # a CacheRows holds its rows in file order
        return replace(
            self,
            X=self.X.subset(idx) if isinstance(self.X, CacheRows) else self.X[idx],
            y=self.y[idx],
            paths=[self.paths[i] for i in idx],
            split=[self.split[i] for i in idx],
            sha256=[self.sha256[i] for i in idx],
            rows=self._cache_rows()[idx],
        )

    @property
    def groups(self) -> np.ndarray:
        """The content of each row for scikit-learn's group-aware splitters: copies of an image
        share a group (the first 60 bits of its sha256), so no fold is scored on a copy of what it
        trained on, and a row keeps its group in any subset (views: ``feats.groups[views.image]``)."""
        return np.array([int(digest[:15], 16) for digest in self.sha256], dtype=np.int64)

    def _cache_rows(self) -> np.ndarray:
        """The cache's row number of each row here."""
        return np.arange(len(self.y), dtype=np.int64) if self.rows is None else self.rows

    @property
    def n_views(self) -> int:
        """Augmented views per image stored in the cache (``tlx extract --views K``); 0 when none."""
        return int(self.attrs.get("views", 0))

    def views(self, max_views: int | None = None, lazy: bool = False) -> ViewFeatures:
        """The stored views 1..``max_views`` (default: all) of the rows loaded here."""
        return load_views(self.snapshot or self.path, self._cache_rows(), max_views, lazy)

    def iter_chunks(self, rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(X, y)`` blocks of at most ``rows`` rows, in order (lazy: one block in memory)."""
        for start in range(0, len(self.y), rows):
            yield self.X[start : start + rows], self.y[start : start + rows]


@dataclass
class ViewFeatures:
    """Augmented view vectors: row j is view ``view[j]`` of row ``image[j]`` of the Features it
    came from (positions there, not cache rows). Labels are the images' labels."""

    X: np.ndarray | CacheRows
    image: np.ndarray  # int64
    view: np.ndarray  # int16, 1..K
    recipe: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image)


def load_views(source: str | Path | Snapshot, rows, max_views: int | None = None, lazy: bool = False) -> ViewFeatures:
    """Views 1..``max_views`` of the cache rows ``rows``, from a cache file or a snapshot."""
    snap = source if isinstance(source, Snapshot) else open_cache(Path(source))
    if "views" not in snap.index:
        raise CacheError(f"{snap.path} has no augmented views: run `tlx extract DATA --views K` to add them")
    g = snap.index["views"]
    stored = int(g.attrs["count"])
    if max_views is not None and not 0 <= max_views <= stored:
        raise CacheError(
            f"{snap.path} holds {stored} views per image, not {max_views}: ask for at most {stored}, "
            f"or run `tlx extract DATA --views {max_views}` first"
        )
    rows, image, view = np.asarray(rows, dtype=np.int64), g["image"][()], g["view"][()]
    position = np.full(max(int(rows.max(initial=-1)), int(image.max(initial=-1))) + 1, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep = np.flatnonzero((position[image] >= 0) & (view <= (stored if max_views is None else max_views)))
    on_disk = CacheRows(snap, keep, dataset="views/features")
    X: np.ndarray | CacheRows = on_disk if lazy else on_disk.to_array()
    return ViewFeatures(X, position[image[keep]], view[keep].astype(np.int16), json.loads(g.attrs["recipe"]))


def resolve_cache(path: str | Path | None) -> Path:
    """A cache file from a file path, a folder or None (the default folder)."""
    where = Path(path) if path is not None else default_cache_dir()
    if where.is_file():
        if reason := not_a_cache(where):
            raise CacheError(reason)
        return where
    return pick_cache(where)


def load_features(path: str | Path | None = None, split: str | None = None, lazy: bool = False) -> Features:
    """Load a feature cache written by ``tlx extract``; ``split`` keeps one split only (and
    reads only its rows); ``lazy`` leaves the features on disk (``X`` is a ``CacheRows``)."""
    path = resolve_cache(path)
    snap = open_cache(path)
    try:
        index = index_of(snap.index, path)
    except CacheError:
        snap.close()
        raise
    feats = Features(
        X=CacheRows(snap),
        y=index.labels.astype(np.int64, copy=False),
        classes=index.classes,
        paths=index.paths,
        split=index.splits,
        sha256=index.hashes,
        space=index.space,
        path=snap.path,
        attrs=index.attrs,
        failed=index.failed,
        snapshot=snap,
    )
    if split is not None:
        if split not in set(feats.split):
            have = sorted(set(feats.split) - {""}) or ["none"]
            raise CacheError(f"{path} has no split {split!r} (splits: {', '.join(have)})")
        feats = feats.subset(np.array([s == split for s in feats.split]))
    if not lazy and isinstance(feats.X, CacheRows):
        feats.X = feats.X.to_array()
    return feats
