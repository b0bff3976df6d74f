"""One committed version of a cache, held open for as long as it is read: a :class:`Snapshot`
opens the index, then every part it names, and reads vectors through those handles, never by
name. Parts are immutable and POSIX keeps an unlinked file readable while it is open, so it
reads the version it opened whatever writers commit or delete meanwhile."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError
from .h5format import (
    READABLE_FORMATS,
    UnreadableCacheError,
    attrs_of,
    decode_strings,
    first_line,
    missing_part,
    not_a_cache,
    open_h5,
    parts_dir,
    read_failed,
    views_dir,
)

OPEN_TRIES = 8  # commits racing one open; each retry means another writer committed meanwhile

Reader = Callable[[h5py.Dataset, np.ndarray], np.ndarray]


class DamagedPartError(CacheError):
    """A part file of a cache that cannot be read back as it was written (cut short, bytes changed)."""

    def __init__(self, cache: Path, part: Path, what: str):
        super().__init__(
            f"{cache}: its part {part.parent.name}/{part.name} is damaged ({what}); "
            "run `tlx extract` on its data again: it re-computes that part's rows and keeps the rest"
        )


class _PartGone(Exception):
    """A part named by the index vanished before it was opened (a commit happened meanwhile)."""


def read_sorted(ds, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of ``ds`` as float32, read in contiguous windows of at most twice
    their count (h5py reads ranges far faster than scattered points)."""
    out = np.empty((len(rows), ds.shape[1]), dtype=np.float32)
    window = max(2 * len(rows), 1024)
    buffer = np.empty((min(window, ds.shape[0]), ds.shape[1]), dtype=ds.dtype)
    done = 0
    while done < len(rows):
        first = int(rows[done])
        end = int(np.searchsorted(rows, first + window, side="left"))
        span = int(rows[end - 1]) + 1 - first
        ds.read_direct(buffer, np.s_[first : first + span], np.s_[0:span])  # no temporary array
        if buffer.dtype == np.float32:
            np.take(buffer, rows[done:end] - first, axis=0, out=out[done:end], mode="clip")
        else:  # float16 caches: widened here, one block at a time
            out[done:end] = buffer[rows[done:end] - first]
        done = end
    return out


@dataclass
class RowMap:
    """Where each row of one logical (n, width) matrix lives: row i is row ``row[i]`` of
    ``datasets[part[i]]``; ``part`` None: the matrix is the single dataset ``datasets[0]``."""

    cache: Path
    n: int
    width: int
    datasets: list
    files: list[Path]
    part: np.ndarray | None = None
    row: np.ndarray | None = None

    def read(self, rows: np.ndarray, reader: Reader = read_sorted) -> np.ndarray:
        """Rows ``rows`` (sorted) as float32, read part by part through the open handles."""
        if self.part is None or self.row is None:
            return self._guarded(0, reader, rows)
        out = np.empty((len(rows), self.width), dtype=np.float32)
        if not len(rows):
            return out
        part, row = self.part[rows], self.row[rows]
        starts = np.r_[0, np.flatnonzero(np.diff(part)) + 1]
        ends = np.r_[starts[1:], len(rows)]
        # the usual layout: each part's rows in one ascending run (a fresh or compacted cache)
        if len(np.unique(part[starts])) == len(starts) and np.all(np.diff(row)[np.diff(part) == 0] >= 0):
            for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
                out[lo:hi] = self._guarded(int(part[lo]), reader, row[lo:hi])
            return out
        order = np.lexsort((row, part))  # by part, then by row inside it
        for group in np.split(order, np.flatnonzero(np.diff(part[order])) + 1):
            out[group] = self._guarded(int(part[group[0]]), reader, row[group])
        return out

    def _guarded(self, k: int, reader: Reader, rows: np.ndarray) -> np.ndarray:
        try:
            return reader(self.datasets[k], rows)
        except OSError as exc:  # HDF5 reports a bad checksum or a short file as an OSError
            raise DamagedPartError(self.cache, self.files[k], first_line(exc)) from None


class Snapshot(AbstractContextManager):
    """An open, committed version of a cache: the index, its attributes, and the row maps."""

    def __init__(self, path: Path, index: h5py.File):
        self.path, self.index, self.attrs = path, index, attrs_of(index)
        self.tables: dict[str, RowMap] = {}
        self.handles: list[h5py.File] = []  # the open parts

    @property
    def is_cache(self) -> bool:
        return self.attrs.get("tlx_format") in READABLE_FORMATS

    def table(self, dataset: str = "features") -> RowMap:
        """The row map of ``dataset``: a cache's features or views, or any 2-D dataset of the file."""
        if dataset not in self.tables:
            ds = self.index[dataset]
            self.tables[dataset] = RowMap(self.path, ds.shape[0], ds.shape[1], [ds], [self.path])
        return self.tables[dataset]

    def close(self) -> None:
        for f in [*self.handles, self.index]:
            f.close()

    def __exit__(self, *exc) -> None:
        self.close()


def open_snapshot(path: str | Path) -> Snapshot:
    """Open the cache at ``path`` and every part it names; a part gone meanwhile: open it again."""
    path = Path(path)
    for _ in range(OPEN_TRIES):
        try:
            snap = Snapshot(path, open_h5(path))
        except FileNotFoundError:
            raise CacheError(f"{path} does not exist: pass a cache file that `tlx extract` wrote") from None
        except OSError as exc:
            raise UnreadableCacheError(path, f"{path} is not a readable HDF5 file ({first_line(exc)})") from None
        try:
            if snap.is_cache and snap.attrs["tlx_format"] >= 2:
                snap.tables["features"] = _part_table(snap, snap.index, parts_dir(path))
                if "views" in snap.index:
                    snap.tables["views/features"] = _part_table(snap, snap.index["views"], views_dir(path))
            return snap
        except _PartGone as gone:
            committed = _inode(snap.index) != _inode(path)
            snap.close()
            if not committed:  # the part is really missing
                raise missing_part(path, gone.args[0]) from None
        except BaseException:
            snap.close()
            raise
    raise CacheError(f"{path} was rewritten {OPEN_TRIES} times while it was being opened: load it again")


def open_cache(path: Path) -> Snapshot:
    """An open snapshot of the cache at ``path``; one clear line for a file that is not one."""
    snap = open_snapshot(path)
    if not snap.is_cache:
        snap.close()
        raise CacheError(not_a_cache(path) or f"{path} is not a tlx feature cache")
    return snap


def _inode(target: h5py.File | Path) -> int | None:
    """The inode of an open file, or of the file at a path now; None when it cannot be told."""
    try:
        return (target.stat() if isinstance(target, Path) else os.fstat(target.id.get_vfd_handle())).st_ino
    except (OSError, ValueError, TypeError):
        return None


def _part_table(snap: Snapshot, group, folder: Path) -> RowMap:
    """Open every part ``group`` names (under ``folder``) and map its rows onto them."""
    datasets, files = [], []
    for name in decode_strings(group["parts/names"]):
        part = folder / name
        try:
            f = open_h5(part)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or not part.exists():  # a writer has just committed
                raise _PartGone(part) from None
            raise DamagedPartError(snap.path, part, first_line(exc)) from None
        snap.handles.append(f)
        if "features" not in f:
            raise DamagedPartError(snap.path, part, "it has no features")
        datasets.append(f["features"])
        files.append(part)
    width = int(group.file.attrs["feature_dim"])
    source_part, source_row = group["source/part"][()].astype(np.int64), group["source/row"][()]
    last = np.full(len(datasets), -1, dtype=np.int64)
    np.maximum.at(last, source_part, source_row)  # the highest row the index maps onto each part
    for k, ds in enumerate(datasets):
        if ds.shape[1:] != (width,) or last[k] >= ds.shape[0]:
            raise DamagedPartError(
                snap.path, files[k], f"its features are {ds.shape}, less than the index maps onto it"
            )
    return RowMap(snap.path, len(source_part), width, datasets, files, source_part, source_row)


def read_summary(path: Path) -> dict:
    """What ``tlx info`` shows of a cache, from one open version of it, without reading its
    features or paths; a file that is not a complete tlx cache raises CacheError."""
    with open_cache(path) as snap:
        try:
            f, attrs = snap.index, snap.attrs
            n = int(attrs["n_images"])
            lengths = {name: len(f[name]) for name in ("labels", "paths", "split", "content_sha256")}
            lengths["features"] = snap.table("features").n
            if set(lengths.values()) != {n}:
                raise UnreadableCacheError(
                    path, f"{path} is damaged: it should hold {n} images but its datasets hold {lengths}"
                )
            failed = read_failed(f)
            space = json.loads(attrs["feature_space"])
            n_views = int(f["views"].attrs["count"]) if "views" in f else 0
            return {
                "path": str(path),
                "dataset": attrs.get("dataset_name"),
                "dataset_root": attrs.get("dataset_root"),
                "backbone": attrs.get("backbone"),
                "pooling": attrs.get("pooling"),
                "stages": int(space.get("stages", 0)),
                "precision": space.get("precision", "fp32"),
                "n_images": n,
                "feature_dim": int(attrs.get("feature_dim", 0)),
                "updated": attrs.get("updated"),
                "weights_sha256": space.get("weights_sha256"),
                "format": int(attrs["tlx_format"]),
                "n_parts": len(f["parts/names"]) if "parts" in f else 0,
                "views": n_views,
                "view_recipe": json.loads(attrs["view_recipe"])["name"] if n_views else None,
                "n_failed": len(failed),
                "failed": [{"path": p, "reason": r} for p, r in failed.items()],
            }
        except (OSError, KeyError, ValueError) as exc:
            raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None
