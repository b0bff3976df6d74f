"""The HDF5 feature cache: immutable part files of vectors, stitched by a small index file.

Layout of one cache, ``<dataset>-<backbone>-<pool>-<id>.h5``:

* ``<cache>.h5.parts/*.h5`` hold the vectors: each part has ``features`` (n x D float32) and
  ``content_sha256`` (n), every chunk with a fletcher32 checksum, is written once under a
  temporary name, fsynced and renamed, and is never modified afterwards. Every rank of a
  distributed run and every incremental run writes parts of its own.
* ``<cache>.h5`` is the index: paths, labels, splits, content hashes, the stat of each file
  (size, mtime_ns, inode, ctime_ns: git's index), failures, attributes, and ``features``, an HDF5 virtual
  dataset whose rows map onto ranges of the parts, so ``h5py.File(cache)["features"]`` reads as
  one N x D array, in the order of the paths. It is there for people who open the file with
  plain h5py; tlx's own readers hold the parts open instead (``tlx.cache.reader``).

The index is the commit point: it is written whole to a temporary file and atomically renamed.
A part that no index references is work of an unfinished run; the next run (holding the lock)
takes its vectors back, so a killed run loses at most its last unflushed rows. Adding k images
writes k vectors plus the index's metadata; removing images writes only the index. Parts that
no row uses any more are deleted after the commit (a reader that holds them open keeps
reading them: see ``tlx.cache.reader``); ``tlx cache compact`` rewrites all rows into
one part when many small parts or many dead rows have piled up.

Every index carries a ``commit_id``. A run notes the id it builds on (under the lock) and its
commit checks, right before the rename, that this id is still the current one: a second writer
that got in anyway (its lock file deleted, a file system that ignores locks) cannot silently
overwrite a commit it did not see. After a commit, only parts this run knew of are deleted, so
another writer's uncommitted parts survive. Disk errors raise :class:`~tlx.errors.StorageError`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..common.atomic import storage_errors
from ..errors import CacheError, StorageError
from .h5write import h5_atomic
from .space import FeatureSpace

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1: one self-contained file (tlx before the part layout), read-only
STR = h5py.string_dtype()
HASH = h5py.string_dtype("ascii", 64)  # a hex sha256: fixed width, so it compresses and costs no heap
STAT_FIELDS = ("size", "mtime_ns", "ino", "ctime_ns")  # the stat index's columns (ctime_ns: -1 in older caches)


def default_cache_dir() -> Path:
    return Path(os.environ.get("TLX_CACHE_DIR", "tlx-cache"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "data"


def cache_file_prefix(dataset_name: str, backbone: str, pooling: str) -> str:
    """The part of a cache's file name known before the network is built (``pooling`` is the
    space's ``pool_label``: ``avg``, or ``avg-s3`` with three stages)."""
    return f"{_slug(dataset_name)}-{_slug(backbone)}-{pooling}-"


def cache_file_name(dataset_name: str, dataset_root: str, space: FeatureSpace) -> str:
    import hashlib

    ident = hashlib.sha256(f"{space.key}|{dataset_root}".encode()).hexdigest()[:10]
    return f"{cache_file_prefix(dataset_name, space.backbone, space.pool_label)}{ident}.h5"


def parts_dir(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".parts")


def _rows_per_chunk(width: int) -> int:
    # h5py's advice: chunks between ~10 KiB and 1 MiB; aim for 256 KiB of float32 rows.
    return int(max(1, min(4096, (256 * 1024) // (4 * max(1, width)))))


def _attrs_of(f) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def decode_strings(ds) -> list[str]:
    """The strings of ``ds``; bytes that are not UTF-8 (a file name in another encoding, read by
    Python as surrogate escapes) come back as the same surrogate escapes, so the name round-trips."""
    if not len(ds):
        return []
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds.asstr(errors="surrogateescape")[()]]


def open_h5(path: Path) -> h5py.File:
    """``h5py.File(path, "r")``; on media where HDF5's file locking fails (read-only mounts,
    some network file systems) the file is opened without it: a reader needs no lock."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as exc:
        if "lock" not in str(exc).lower():
            raise
        return h5py.File(path, "r", locking=False)


def read_attrs(path: Path) -> dict:
    with open_h5(path) as f:
        return _attrs_of(f)


class UnreadableCacheError(CacheError):
    """A cache file that cannot be read (truncated, damaged). ``reason`` says what is wrong
    without advice, for callers that act on it themselves (extract rebuilds it). The advice
    never asks to delete anything: the file may be a user's, and extract rebuilds an index in
    place, taking back the vectors its parts still hold."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{reason}; run `tlx extract` on its data again to rebuild it")
        self.path = path
        self.reason = reason


def not_a_cache(path: Path) -> str | None:
    """Why ``path`` (an existing file) is not a tlx cache index, naming what it is instead; None
    when it is one, or when it cannot be told (an unreadable file is reported by its reader)."""
    folder = path.parent.name
    for suffix in (".parts", ".views"):
        if folder.endswith(".h5" + suffix):
            cache = path.parent.with_name(folder[: -len(suffix)])
            return f"{path} is a part of the cache {cache}, not a cache: pass {cache}"
    try:
        attrs = read_attrs(path)
    except (OSError, ValueError):
        return None
    if attrs.get("tlx_format") in READABLE_FORMATS:
        return None
    if "tlx_part" in attrs or "tlx_view_part" in attrs:
        return f"{path} is a part of a tlx cache, not a cache: pass the .h5 index beside its .parts folder"
    return (
        f"{path} is not a tlx feature cache (it has no tlx_format attribute): "
        "pass a cache that `tlx extract` wrote, or a folder of them"
    )


def check_format(path: Path, attrs: dict) -> int:
    fmt = attrs.get("tlx_format")
    if fmt not in READABLE_FORMATS:
        raise UnreadableCacheError(
            path, f"{path} is not a tlx feature cache (format {fmt!r}, expected {FORMAT_VERSION})"
        )
    return int(fmt)


def check_parts(f, path: Path) -> None:
    """Every part file the index names must be there: HDF5 would read a missing one as fill
    values (NaN here) without a word."""
    if "views" in f:
        from .views import check_view_parts

        check_view_parts(f, path)
    if "parts" not in f:
        return
    folder = parts_dir(path)
    for name in decode_strings(f["parts/names"]):
        if not (folder / name).is_file():
            raise UnreadableCacheError(
                path, f"{path} is damaged: its part file {folder.name}/{name} is missing (deleted or not copied)"
            )


# --------------------------------------------------------------------------- reading


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
    # the stat index (format 2): size, mtime_ns, inode and ctime_ns of each row's file, and of each failure
    stats: np.ndarray = field(default_factory=lambda: np.zeros((0, len(STAT_FIELDS)), np.int64))
    failures: Failures | None = None  # the failures with their stats and hashes (format 2)
    stat_time_ns: int = 0  # when the run that took those stats started (racy-git check)
    # where each row's vector lives: part_names[source_part[i]], row source_row[i]
    part_names: list[str] = field(default_factory=list)
    part_rows: list[int] = field(default_factory=list)
    source_part: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    source_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    views: Any = None  # a viewstore.ViewTable when the cache has augmented views

    def row_of_hash(self) -> dict[str, int]:
        return {h: i for i, h in enumerate(self.hashes)}

    def source_of_hash(self) -> dict[str, tuple[str, int]]:
        """Content hash -> (part file name, row) of every vector this index uses."""
        names = self.part_names
        return {
            h: (names[p], int(r))
            for h, p, r in zip(self.hashes, self.source_part.tolist(), self.source_row.tolist(), strict=True)
        }


def read_index(path: Path) -> CacheIndex:
    """The index at ``path``, its part files checked present (for writers, under the lock;
    readers take a ``tlx.cache.reader.Snapshot`` and :func:`index_of` its open index)."""
    try:
        with open_h5(path) as f:
            check_format(path, _attrs_of(f))
            check_parts(f, path)
            return index_of(f, path)
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None


def index_of(f, path: Path) -> CacheIndex:
    """The :class:`CacheIndex` of an open index file ``f``."""
    try:
        attrs = _attrs_of(f)
        fmt = check_format(path, attrs)
        index = CacheIndex(
            path=path,
            space=FeatureSpace.from_dict(json.loads(attrs["feature_space"])),
            paths=decode_strings(f["paths"]),
            hashes=decode_strings(f["content_sha256"]),
            labels=f["labels"][()],
            splits=decode_strings(f["split"]),
            classes=decode_strings(f["classes"]),
            failed=dict(zip(decode_strings(f["failed/paths"]), decode_strings(f["failed/reasons"]), strict=False)),
            attrs=attrs,
            format=fmt,
        )
        if fmt >= 2:
            from .views import read_group

            _read_stat_index(f, index)
            index.views = read_group(f)
        return index
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None


def _read_stat_index(f, index: CacheIndex) -> None:
    index.stats = _stat_columns(f["stat"], len(index.paths))
    fs = _stat_columns(f["failed"], len(index.failed))
    fh = decode_strings(f["failed/sha256"])
    failures = Failures()
    for (p, reason), st, h in zip(index.failed.items(), fs.tolist(), fh, strict=True):
        failures.add(p, reason, tuple(st) if st[0] >= 0 else None, h)
    index.failures = failures
    index.stat_time_ns = int(index.attrs.get("stat_time_ns", 0))
    index.part_names = decode_strings(f["parts/names"])
    index.part_rows = f["parts/rows"][()].tolist()
    index.source_part = f["source/part"][()]
    index.source_row = f["source/row"][()]


def _stat_columns(group, n: int) -> np.ndarray:
    """The stat index of a group as an (n, 4) array; a column older caches lack (ctime_ns) is
    -1, which matches no real stat: each such file is re-hashed once, then recorded whole."""
    cols = [group[name][()] if name in group else np.full(n, -1) for name in STAT_FIELDS]
    return np.stack(cols, axis=1).astype(np.int64).reshape(-1, len(STAT_FIELDS))


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


def _check_base(path: Path, base: str | None) -> None:
    if commit_id(path) != base:
        raise CommitConflict(
            f"another process committed {path} while this run was updating it (its lock file was removed "
            "or not honoured); this run wrote nothing to the index: re-run the command"
        )


# --------------------------------------------------------------------------- parts


def write_part(folder: Path, name: str, hashes: Sequence[str], features: np.ndarray, space: FeatureSpace) -> Path:
    """One immutable part file, fsynced and renamed into place (the journal's unit of durability)."""
    width = space.feature_dim
    n = len(hashes)
    with h5_atomic(folder / name) as f:
        _part_datasets(f, n, width, space)
        if n:
            f["features"][:] = features.astype(space.store_dtype, copy=False)
            f["content_sha256"][:] = np.array(hashes, dtype="S64")
    return folder / name


def _part_datasets(f, n: int, width: int, space: FeatureSpace) -> None:
    """A part's datasets, each chunk with HDF5's fletcher32 checksum: a chunk whose bytes changed
    on disk fails to read (``tlx.cache.reader`` names the part) instead of reading as numbers."""
    chunk = (min(_rows_per_chunk(width), max(n, 1)), width)
    f.create_dataset(
        "features", shape=(n, width), maxshape=(None, width), dtype=space.store_dtype, chunks=chunk, fletcher32=True
    )
    f.create_dataset(
        "content_sha256", shape=(n,), dtype=HASH, maxshape=(None,), chunks=(max(1, min(n, 8192)),), fletcher32=True
    )
    f.attrs["tlx_part"] = FORMAT_VERSION
    f.attrs["feature_space"] = json.dumps(space.to_dict())


def merge_parts(folder: Path, sources: Sequence[str], name: str, space: FeatureSpace) -> list[str]:
    """Concatenate part files into one new part (block by block), then delete the sources.
    Returns the merged part's hashes. A kill in between leaves the sources or both: either way
    every vector is still in some complete part."""
    hashes: list[str] = []
    sizes = []
    for s in sources:
        with open_h5(folder / s) as f:
            hashes += decode_strings(f["content_sha256"])
            sizes.append(len(f["content_sha256"]))
    with h5_atomic(folder / name) as out:
        _part_datasets(out, len(hashes), space.feature_dim, space)
        at = 0
        for s, n in zip(sources, sizes, strict=True):
            with open_h5(folder / s) as f:
                out["features"][at : at + n] = f["features"][()]
            at += n
        if hashes:
            out["content_sha256"][:] = np.array(hashes, dtype="S64")
    for s in sources:
        (folder / s).unlink(missing_ok=True)
    return hashes


def read_part_hashes(path: Path, space: FeatureSpace) -> list[str] | None:
    """The hashes of a complete part of ``space``; None for a part of another space or a damaged file."""
    try:
        with open_h5(path) as f:
            if json.loads(f.attrs["feature_space"]) != space.to_dict():
                return None
            return decode_strings(f["content_sha256"])
    except (OSError, KeyError, ValueError):
        return None


class PartWriter:
    """Buffers one process's new vectors and flushes them as a part every ``flush_rows`` rows or
    ``flush_seconds`` seconds, whichever comes first: a crash loses at most that much work, and
    a run writes a few parts, not one file (and one fsync) per batch. ``close`` merges the
    flushed segments into one part, so a run leaves one part per process."""

    def __init__(self, folder: Path, prefix: str, space: FeatureSpace, flush_rows: int = 4096, flush_seconds=5.0):
        self.folder, self.prefix, self.space = folder, prefix, space
        self.flush_rows, self.flush_seconds = max(1, flush_rows), flush_seconds
        self._hashes: list[str] = []
        self._feats: list[np.ndarray] = []
        self._last = time.monotonic()
        self.segments: list[str] = []
        self.n_rows = 0

    def add(self, hashes: Sequence[str], features: np.ndarray) -> None:
        self._hashes += list(hashes)
        self._feats.append(np.asarray(features, dtype=np.float32))
        self.n_rows += len(hashes)
        if len(self._hashes) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._hashes:
            name = f"{self.prefix}-{len(self.segments):06d}.h5"
            write_part(self.folder, name, self._hashes, np.concatenate(self._feats), self.space)
            self.segments.append(name)
            self._hashes, self._feats = [], []
        self._last = time.monotonic()

    def close(self) -> list[tuple[str, list[str]]]:
        """Flush and merge; returns ``[(part name, its hashes)]`` (empty when nothing was added)."""
        self.flush()
        if not self.segments:
            return []
        if len(self.segments) == 1:
            return [(self.segments[0], read_part_hashes(self.folder / self.segments[0], self.space) or [])]
        name = f"{self.prefix}.h5"
        try:
            return [(name, merge_parts(self.folder, self.segments, name, self.space))]
        except StorageError:
            # merging only tidies up: the segments are complete parts, and the commit may still fit
            return [(s, read_part_hashes(self.folder / s, self.space) or []) for s in self.segments]


def orphan_parts(path: Path, index: CacheIndex | None, space: FeatureSpace) -> dict[str, tuple[str, int]]:
    """Vectors of parts no index references (a run that stopped before its commit): hash ->
    (part, row). Parts of another feature space and damaged ones are deleted. Call under the lock."""
    folder = parts_dir(path)
    if not folder.is_dir():
        return {}
    for tmp in folder.glob(".*.tmp"):
        with suppress(OSError):  # on read-only media they stay, harmless
            tmp.unlink(missing_ok=True)  # half-written parts of killed runs
    used = set(index.part_names) if index is not None else set()
    found: dict[str, tuple[str, int]] = {}
    for part in sorted(folder.glob("*.h5")):
        if part.name in used:
            continue
        hashes = read_part_hashes(part, space)
        if hashes is None:
            with suppress(OSError):
                part.unlink(missing_ok=True)  # never mix another space's vectors in
            continue
        for row, h in enumerate(hashes):
            found.setdefault(h, (part.name, row))
    return found


# --------------------------------------------------------------------------- the index


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

    def same_as(self, other: Failures) -> bool:
        return (self.reasons, self.stats, self.hashes) == (other.reasons, other.stats, other.hashes)


def write_index(
    path: Path,
    rows: list[Row],
    classes: list[str],
    failed: Failures,
    space: FeatureSpace,
    attrs: dict,
    part_sizes: dict[str, int],
    views=None,
    base: str | None = UNCHECKED,
) -> None:
    """Write the index for ``rows`` to a temporary file and atomically put it at ``path``;
    ``views``: the rows' augmented views (a ``viewstore.ViewTable``), or None. ``base``: the
    :func:`commit_id` this commit builds on, checked right before the rename."""
    width = space.feature_dim
    used = sorted({r.part for r in rows})
    part_no = {name: k for k, name in enumerate(used)}
    check = None if base == UNCHECKED else lambda: _check_base(path, base)
    with h5_atomic(path, check) as f:
        _virtual_features(f, path, rows, part_sizes, width, space.store_dtype)
        _strings(f, "paths", [r.path for r in rows])
        _strings(f, "split", [r.split for r in rows])
        _array(f, "content_sha256", np.array([r.sha256 for r in rows], dtype="S64"), HASH)
        _array(f, "labels", np.array([r.label for r in rows], dtype=np.int64))
        _strings(f, "classes", classes)
        stats = np.array([r.stat for r in rows], dtype=np.int64).reshape(-1, len(STAT_FIELDS))
        for k, name in enumerate(STAT_FIELDS):
            _array(f, f"stat/{name}", stats[:, k])
        _array(f, "source/part", np.array([part_no[r.part] for r in rows], dtype=np.int32))
        _array(f, "source/row", np.array([r.part_row for r in rows], dtype=np.int64))
        _strings(f, "parts/names", used)
        _array(f, "parts/rows", np.array([part_sizes[n] for n in used], dtype=np.int64))
        g = f.create_group("failed")
        _strings(g, "paths", list(failed.reasons))
        _strings(g, "reasons", list(failed.reasons.values()))
        none = (-1,) * len(STAT_FIELDS)
        fstats = np.array([failed.stats.get(p, none) for p in failed.reasons], dtype=np.int64).reshape(-1, len(none))
        for k, name in enumerate(STAT_FIELDS):
            _array(g, name, fstats[:, k])
        _array(g, "sha256", np.array([failed.hashes.get(p, "") for p in failed.reasons], dtype="S64"), HASH)
        for key, value in attrs.items():
            f.attrs[key] = str(value) if isinstance(value, str) else value  # str subclasses confuse h5py
        f.attrs["tlx_format"] = FORMAT_VERSION
        f.attrs["feature_space"] = json.dumps(space.to_dict())
        f.attrs["n_images"] = len(rows)
        f.attrs["feature_dim"] = width
        f.attrs["commit_id"] = secrets.token_hex(8)
        if views is not None:
            from .views import write_group

            write_group(f, path, views, space)
            f.attrs["views"] = views.count
            f.attrs["view_recipe"] = json.dumps(views.recipe, sort_keys=True)


def _virtual_features(f, path: Path, rows: list[Row], sizes: dict[str, int], width: int, dtype: str) -> None:
    """``features`` as a virtual dataset over the feature parts (see :func:`virtual_rows`)."""
    parts, part_rows = [r.part for r in rows], [r.part_row for r in rows]
    virtual_rows(f, "features", parts_dir(path).name, parts, part_rows, sizes, width, dtype)


def virtual_rows(group, name: str, folder: str, parts, part_rows, sizes: dict[str, int], width: int, dtype) -> None:
    """A virtual dataset whose row i is row ``part_rows[i]`` of part ``parts[i]`` in ``folder``:
    one mapping per run of rows that are consecutive in one part (one per part after a fresh
    run or a compaction). Source names are relative to the index's folder, so a cache folder can
    be moved or copied whole. A missing part reads as NaN."""
    if not len(parts):
        group.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=dtype, chunks=(1, width))
        return
    layout = h5py.VirtualLayout(shape=(len(parts), width), dtype=dtype)
    sources = {n: h5py.VirtualSource(f"{folder}/{n}", "features", shape=(sizes[n], width)) for n in set(parts)}
    for start, stop, part, first in _runs(parts, part_rows):
        layout[start:stop] = sources[part][first : first + (stop - start)]
    group.create_virtual_dataset(name, layout, fillvalue=np.nan)


def _runs(parts, part_rows) -> Iterator[tuple[int, int, str, int]]:
    """``(start, stop, part, first part row)`` of each maximal run of consecutive rows."""
    start, n = 0, len(parts)
    for i in range(1, n + 1):
        if i == n or parts[i] != parts[start] or part_rows[i] != part_rows[i - 1] + 1:
            yield start, i, parts[start], int(part_rows[start])
            start = i


def _strings(group, name: str, values: list[str]):
    """UTF-8 strings; a file name that is not UTF-8 on disk is stored as its own bytes
    (surrogateescape), not refused: every file of the data is one row, whatever its name."""
    raw = [v.encode("utf-8", "surrogateescape") for v in values]
    return group.create_dataset(
        name, data=np.array(raw, dtype=object), dtype=STR, maxshape=(None,), chunks=True if values else None
    )


def _array(group, name: str, data: np.ndarray, dtype=None):
    """A 1-D metadata array, gzip-compressed (hashes and stats shrink several times over)."""
    if not len(data):
        return group.create_dataset(name, shape=(0,), dtype=dtype or data.dtype, maxshape=(None,))
    return group.create_dataset(
        name,
        data=data,
        dtype=dtype or data.dtype,
        maxshape=(None,),
        chunks=(min(len(data), 65536),),
        compression="gzip",
        compression_opts=1,
        shuffle=dtype is None,
    )


def part_sizes(path: Path, names: Sequence[str]) -> dict[str, int]:
    sizes = {}
    for n in names:
        with open_h5(parts_dir(path) / n) as f:
            sizes[n] = len(f["content_sha256"])
    return sizes


def remove_unused_parts(path: Path, keep: set[str], among: set[str] | None = None) -> int:
    """After a commit: delete the parts no row of the index uses. Returns how many were deleted."""
    return remove_unused_files(parts_dir(path), keep, among)


def remove_unused_files(folder: Path, keep: set[str], among: set[str] | None = None) -> int:
    """Delete the part files in ``folder`` not named in ``keep``, and the folder once empty.
    ``among``: only these names are candidates, the parts the committing run knew of; a part
    another writer made meanwhile is not this run's to delete."""
    if not folder.is_dir():
        return 0
    gone = 0
    for part in folder.glob("*.h5"):
        if part.name not in keep and (among is None or part.name in among):
            part.unlink(missing_ok=True)
            gone += 1
    if not any(folder.iterdir()):
        folder.rmdir()
    return gone


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written indexes left by killed runs; call only while holding the cache lock."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- locking


class CacheLock:
    """Advisory lock on ``<cache>.lock``: a second extract on the same cache waits its turn.

    ``filelock`` uses the operating system's lock (flock on POSIX, msvcrt on Windows), which is
    released when its holder dies, even by kill -9, so a stale lock cannot block the next run.
    It is imported here, not at the top, so that reading a cache needs no locking at all.

    On a read-only file system no process can write the cache, so there is nothing to lock
    against: the lock is not taken and ``read_only`` holds the error a write would meet (a run
    with nothing to write still succeeds; one with work raises it before it starts).
    """

    def __init__(self, cache_path: Path, on_wait: Callable[[str], None] | None = None):
        self.path = cache_path.with_name(cache_path.name + ".lock")
        self.on_wait = on_wait
        self._lock: Any = None
        self.read_only: StorageError | None = None

    def __enter__(self):
        try:
            self._acquire()
        except StorageError as exc:
            if exc.errno != errno.EROFS:
                raise
            self._lock, self.read_only = None, exc
        return self

    def _acquire(self) -> None:
        import filelock

        with storage_errors(self.path, "create the lock file"):
            told = False
            while True:
                self._lock = filelock.FileLock(self.path)
                try:
                    self._lock.acquire(timeout=0)
                except filelock.Timeout:
                    if self.on_wait and not told:
                        busy = self.path.with_suffix("")
                        self.on_wait(f"another tlx extract is writing {busy}; waiting for it to finish")
                        told = True
                    self._lock.acquire()
                if self._locks_the_file_at_path():
                    return
                self._lock.release()  # removed or replaced while this process waited: lock the new one

    def _locks_the_file_at_path(self) -> bool:
        """Is the file this process locked still the one at the lock's path? A lock on a file
        someone deleted excludes nobody: the next process creates a new file and locks that."""
        fd = getattr(getattr(self._lock, "_context", None), "lock_file_fd", None)
        if not isinstance(fd, int):
            return True  # this filelock does not expose it; the commit's base check still holds
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.release()
        return False


def list_caches(where: Path) -> list[Path]:
    """The caches under a folder (or the file itself), newest first by the ``updated`` time each
    index records (file times change on a copy or a touch; the record does not). Part files and
    foreign .h5 files are not caches and are never listed; a file HDF5 cannot open is listed
    (last), so that whoever reads it reports it as damaged."""
    if where.is_file():
        return [where]
    if not where.is_dir():
        return []
    found = []
    for p in where.glob("*.h5"):
        if p.name.startswith(".") or not p.is_file():
            continue
        try:
            attrs = read_attrs(p)
        except (OSError, ValueError):
            found.append((0.0, p.stat().st_mtime, p))  # unreadable: possibly a damaged cache
            continue
        if attrs.get("tlx_format") in READABLE_FORMATS:
            found.append((updated_time(attrs), p.stat().st_mtime, p))
    return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


def updated_time(attrs: dict) -> float:
    """The index's recorded ``updated`` time as seconds since the epoch (0 when absent)."""
    from datetime import datetime

    try:
        return datetime.strptime(str(attrs.get("updated", "")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return 0.0


def pick_cache(where: Path) -> Path:
    """The cache a command without ``--features`` uses, from a folder: the newest (by recorded
    ``updated`` time) of the one dataset the folder holds caches of; with several datasets, the
    one named like the current working folder, else a refusal listing the candidates."""
    caches = list_caches(where)
    if not caches:
        raise CacheError(f"no feature cache found at {where}: run `tlx extract DATA` first, or pass --features FILE")
    datasets: dict[str, list[Path]] = {}
    for p in caches:
        try:
            name = str(read_attrs(p).get("dataset_name", ""))
        except (OSError, ValueError):
            name = ""  # unreadable: its reader reports it, if it is the one taken
        datasets.setdefault(name, []).append(p)
    if len(datasets) == 1:
        return caches[0]
    here = Path.cwd().name
    if here in datasets:
        return datasets[here][0]
    listed = "; ".join(f"{name or '?'}: {', '.join(p.name for p in ps)}" for name, ps in sorted(datasets.items()))
    raise CacheError(f"{where} holds caches of {len(datasets)} datasets ({listed}): pass --features FILE to say which")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
