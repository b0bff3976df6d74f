"""The index file, ``<cache>.h5``, the commit point of a cache: its rows, failures, attributes,
where each row's vector lives in the parts, and the ``views`` group. It is written whole to a
temporary file and renamed, and carries a ``commit_id`` that the next commit checks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .h5format import (
    FORMAT_VERSION,
    HASH,
    READABLE_FORMATS,
    STAT_FIELDS,
    UnreadableCacheError,
    attrs_of,
    decode_strings,
    missing_part,
    open_h5,
    parts_dir,
    read_attrs,
    read_failed,
    views_dir,
    write_array,
    write_sources,
    write_strings,
)
from .h5write import h5_atomic
from .parts import unreferenced_parts
from .space import FeatureSpace


@dataclass
class Row:
    """One image of the new cache, and where its vector lives."""

    path: str
    label: int
    split: str
    sha256: str
    stat: tuple[int, ...]  # size, mtime_ns, inode, ctime_ns of the file the hash was computed from
    part: str  # part file name
    part_row: int


@dataclass
class Failures:
    """Images that could not be read, with the stat and content hash they failed with: the same
    bytes fail the same way, so an unchanged failure is not decoded again."""

    reasons: dict[str, str] = field(default_factory=dict)
    stats: dict[str, tuple[int, ...]] = field(default_factory=dict)  # absent: no stat, look again
    hashes: dict[str, str] = field(default_factory=dict)  # absent: the file could not be read at all

    def add(self, relpath: str, reason: str, stat=None, sha256: str = "") -> None:
        self.reasons[relpath] = reason
        if stat is not None:
            self.stats[relpath] = tuple(stat)
        if sha256:
            self.hashes[relpath] = sha256


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

    def sources(self, hashes: Sequence[str]) -> dict[tuple[str, int], tuple[str, int]]:
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
    g = f.create_group("views")
    folder = views_dir(path).name
    write_sources(g, folder, table.part, table.part_row, table.sizes, space.feature_dim, space.store_dtype)
    write_array(g, "image", np.asarray(table.image, dtype=np.int64))
    write_array(g, "view", np.asarray(table.view, dtype=np.int16))
    g.attrs["count"] = f.attrs["views"] = table.count
    g.attrs["recipe"] = f.attrs["view_recipe"] = json.dumps(table.recipe, sort_keys=True)


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


@dataclass
class CacheIndex:
    """What a complete cache holds, without its features: enough to plan an incremental run."""

    path: Path
    space: FeatureSpace
    paths: list[str]
    hashes: list[str]
    labels: np.ndarray
    splits: list[str]
    classes: list[str]
    failed: dict[str, str]
    attrs: dict
    format: int = FORMAT_VERSION
    # the stat index (format 2): size, mtime_ns, inode and ctime_ns of each row's file
    stats: np.ndarray = field(default_factory=lambda: np.zeros((0, len(STAT_FIELDS)), np.int64))
    failures: Failures | None = None  # the failures with their stats and hashes (format 2)
    stat_time_ns: int = 0  # when the run that took those stats started (racy-git check)
    # where each row's vector lives: part_names[source_part[i]], row source_row[i]
    part_names: list[str] = field(default_factory=list)
    part_rows: list[int] = field(default_factory=list)
    source_part: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    source_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    views: ViewTable | None = None  # when the cache has augmented views

    def sources(self) -> list[tuple[str, int]]:
        """(part file name, row) of each row's vector."""
        rows = zip(self.source_part.tolist(), self.source_row.tolist(), strict=True)
        return [(self.part_names[p], r) for p, r in rows]

    def source_of_hash(self) -> dict[str, tuple[str, int]]:
        return dict(zip(self.hashes, self.sources(), strict=True))


def read_index(path: Path) -> CacheIndex:
    """The index at ``path``, its parts checked present (for writers; readers take a Snapshot)."""
    try:
        with open_h5(path) as f:
            index = index_of(f, path)
    except OSError as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None
    view_parts = [views_dir(path) / name for name in index.views.sizes] if index.views is not None else []
    for part in [*view_parts, *(parts_dir(path) / name for name in index.part_names)]:
        if not part.is_file():
            raise missing_part(path, part)
    return index


def index_of(f, path: Path) -> CacheIndex:
    try:
        attrs = attrs_of(f)
        fmt = attrs.get("tlx_format")
        if fmt not in READABLE_FORMATS:
            raise UnreadableCacheError(
                path, f"{path} is not a tlx feature cache (format {fmt!r}, expected {FORMAT_VERSION})"
            )
        index = CacheIndex(
            path=path,
            space=FeatureSpace.from_dict(json.loads(attrs["feature_space"])),
            paths=decode_strings(f["paths"]),
            hashes=decode_strings(f["content_sha256"]),
            labels=f["labels"][()],
            splits=decode_strings(f["split"]),
            classes=decode_strings(f["classes"]),
            failed=read_failed(f),
            attrs=attrs,
            format=fmt,
        )
        if fmt < 2:
            return index
        index.stats = _stat_columns(f["stat"], len(index.paths))
        index.failures = Failures()
        failed_stats = _stat_columns(f["failed"], len(index.failed)).tolist()
        for (p, why), st, h in zip(index.failed.items(), failed_stats, decode_strings(f["failed/sha256"]), strict=True):
            index.failures.add(p, why, tuple(st) if st[0] >= 0 else None, h)
        index.stat_time_ns = int(attrs.get("stat_time_ns", 0))
        index.part_names = decode_strings(f["parts/names"])
        index.part_rows = f["parts/rows"][()].tolist()
        index.source_part, index.source_row = f["source/part"][()], f["source/row"][()]
        index.views = read_group(f)
        return index
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None


def _stat_columns(group, n: int) -> np.ndarray:
    """The stat index of a group as an (n, 4) array; a column older caches lack (ctime_ns) is
    -1, which matches no real stat: each such file is re-hashed once, then recorded whole."""
    cols = [group[name][()] if name in group else np.full(n, -1) for name in STAT_FIELDS]
    return np.stack(cols, axis=1).astype(np.int64).reshape(-1, len(STAT_FIELDS))


def orphan_parts(path: Path, index: CacheIndex | None, space: FeatureSpace) -> dict[str, tuple[str, int]]:
    """Vectors of parts no index references (a run that stopped before its commit): hash ->
    (part, row). Parts of another feature space and damaged ones are deleted. Call under the lock."""
    used = set(index.part_names) if index is not None else set()
    found: dict[str, tuple[str, int]] = {}
    for name, hashes in unreferenced_parts(parts_dir(path), used, space):
        for row, h in enumerate(hashes):
            found.setdefault(h, (name, row))
    return found


def commit_id(path: Path) -> str | None:
    """The id of the commit at ``path``: None when there is no index, "" for one without an id
    (an older tlx) or one that cannot be read (a run rebuilds it and checks the same way)."""
    if not path.exists():
        return None
    try:
        return str(read_attrs(path).get("commit_id", ""))
    except (OSError, KeyError, ValueError):
        return ""


UNCHECKED = "-"  # a base no commit has: the caller does not ask for the check


class CommitConflict(CacheError):
    """Another process committed the index this run was building on."""

    exit_code = 1


def write_index(
    path: Path,
    rows: list[Row],
    classes: list[str],
    failed: Failures,
    space: FeatureSpace,
    attrs: dict,
    part_sizes: dict[str, int],
    views: ViewTable | None = None,
    base: str | None = UNCHECKED,
) -> None:
    """Write the index for ``rows`` to a temporary file and atomically put it at ``path``;
    ``base``: the :func:`commit_id` this commit builds on, checked right before the rename."""

    def check_base() -> None:
        if commit_id(path) != base:
            raise CommitConflict(
                f"another process committed {path} while this run was updating it (its lock file was removed "
                "or not honoured); this run wrote nothing to the index: re-run the command"
            )

    with h5_atomic(path, None if base == UNCHECKED else check_base) as f:
        parts, part_rows = [r.part for r in rows], [r.part_row for r in rows]
        write_sources(f, parts_dir(path).name, parts, part_rows, part_sizes, space.feature_dim, space.store_dtype)
        write_strings(f, "paths", [r.path for r in rows])
        write_strings(f, "split", [r.split for r in rows])
        write_array(f, "content_sha256", np.array([r.sha256 for r in rows], dtype="S64"), HASH)
        write_array(f, "labels", np.array([r.label for r in rows], dtype=np.int64))
        write_strings(f, "classes", classes)
        _write_stats(f, "stat/", [r.stat for r in rows])
        g = f.create_group("failed")
        write_strings(g, "paths", list(failed.reasons))
        write_strings(g, "reasons", list(failed.reasons.values()))
        _write_stats(g, "", [failed.stats.get(p, (-1,) * len(STAT_FIELDS)) for p in failed.reasons])
        write_array(g, "sha256", np.array([failed.hashes.get(p, "") for p in failed.reasons], dtype="S64"), HASH)
        for key, value in attrs.items():
            f.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses confuse h5py
        f.attrs["tlx_format"] = FORMAT_VERSION
        f.attrs["feature_space"] = json.dumps(space.to_dict())
        f.attrs["n_images"] = len(rows)
        f.attrs["feature_dim"] = space.feature_dim
        f.attrs["commit_id"] = secrets.token_hex(8)
        if views is not None:
            write_group(f, path, views, space)


def _write_stats(group, prefix: str, stats: list) -> None:
    columns = np.array(stats, dtype=np.int64).reshape(-1, len(STAT_FIELDS))
    for k, name in enumerate(STAT_FIELDS):
        write_array(group, prefix + name, columns[:, k])


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written indexes left by killed runs; call only while holding the cache lock."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
