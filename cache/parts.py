"""Part files: the immutable files that hold a cache's vectors, feature and view parts alike
(they differ only in their :class:`PartKind`), written once under a temporary name and renamed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheError, StorageError
from .h5format import FORMAT_VERSION, HASH, decode_strings, open_h5, parts_dir, rows_per_chunk
from .h5write import h5_atomic
from .space import FeatureSpace


@dataclass(frozen=True)
class PartKind:
    """A kind of part: its key columns (a key is a hash, or a tuple) and its marking attribute."""

    marker: str
    marker_value: int
    columns: tuple[str, ...]  # content_sha256 first

    def read_keys(self, f) -> list[Any]:
        hashes = decode_strings(f["content_sha256"])
        if len(self.columns) == 1:
            return hashes
        others = [f[name][()].astype(int).tolist() for name in self.columns[1:]]
        return list(zip(hashes, *others, strict=True))


FEATURE_PARTS = PartKind("tlx_part", FORMAT_VERSION, ("content_sha256",))
VIEW_PARTS = PartKind("tlx_view_part", 1, ("content_sha256", "view"))  # view: the view index >= 1


def part_datasets(f, keys: Sequence, space: FeatureSpace, kind: PartKind = FEATURE_PARTS, attrs=None) -> None:
    """A part's datasets, its keys written, every chunk with a fletcher32 checksum (changed bytes fail
    to read); ``attrs``: what the part must match to be taken back besides its space (a view recipe)."""
    n, width = len(keys), space.feature_dim
    chunk = (min(rows_per_chunk(width), max(n, 1)), width)
    f.create_dataset(
        "features", shape=(n, width), maxshape=(None, width), dtype=space.store_dtype, chunks=chunk, fletcher32=True
    )
    rows = (max(1, min(n, 8192)),)
    for k, name in enumerate(kind.columns):
        column = keys if len(kind.columns) == 1 else [key[k] for key in keys]
        data = np.array(column, dtype="S64" if k == 0 else np.int16)
        f.create_dataset(
            name, data=data, dtype=HASH if k == 0 else None, maxshape=(None,), chunks=rows, fletcher32=True
        )
    f.attrs[kind.marker] = kind.marker_value
    f.attrs["feature_space"] = json.dumps(space.to_dict())
    for key, value in (attrs or {}).items():
        f.attrs[key] = json.dumps(value, sort_keys=True)


def write_part(
    folder: Path, name: str, keys: Sequence, features: np.ndarray, space: FeatureSpace, kind=FEATURE_PARTS, attrs=None
) -> Path:
    with h5_atomic(folder / name) as f:
        part_datasets(f, keys, space, kind, attrs)
        if len(keys):
            f["features"][:] = features.astype(space.store_dtype, copy=False)
    return folder / name


def merge_parts(
    folder: Path, segments: list[tuple[str, list]], name: str, space: FeatureSpace, kind=FEATURE_PARTS, attrs=None
) -> list:
    """Concatenate the parts ``segments`` (name, keys) into the new part ``name``, one at a time,
    then delete them; returns its keys. A kill in between leaves every vector in a complete part."""
    keys = [key for _, segment_keys in segments for key in segment_keys]
    with h5_atomic(folder / name) as out:
        part_datasets(out, keys, space, kind, attrs)
        at = 0
        for segment, segment_keys in segments:
            with open_h5(folder / segment) as f:
                out["features"][at : at + len(segment_keys)] = f["features"][()]
            at += len(segment_keys)
    for segment, _ in segments:
        (folder / segment).unlink(missing_ok=True)
    return keys


def read_part_keys(path: Path, space: FeatureSpace, kind=FEATURE_PARTS, attrs=None) -> list | None:
    """The keys of a complete part of ``space`` (and ``attrs``); None for any other part."""
    try:
        with open_h5(path) as f:
            if json.loads(f.attrs["feature_space"]) != space.to_dict():
                return None
            if any(json.loads(f.attrs[key]) != value for key, value in (attrs or {}).items()):
                return None
            return kind.read_keys(f)
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class PartWriter:
    """Flushes one process's new vectors as a part every ``flush_rows`` rows or ``flush_seconds``
    (a crash loses at most that much); ``close`` merges them into one part per process."""

    folder: Path
    prefix: str
    space: FeatureSpace
    flush_rows: int = 4096
    flush_seconds: float = 5.0
    kind: PartKind = FEATURE_PARTS
    attrs: dict | None = None
    parts: list[tuple[str, list]] = field(default_factory=list, init=False)  # the flushed segments and their keys
    _keys: list = field(default_factory=list, init=False, repr=False)
    _feats: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _last: float = field(default_factory=time.monotonic, init=False, repr=False)

    @property
    def segments(self) -> list[str]:
        return [name for name, _ in self.parts]

    def add(self, keys: Sequence, features: np.ndarray) -> None:
        if not len(keys):
            return
        self._keys += list(keys)
        self._feats.append(np.asarray(features, dtype=np.float32))
        if len(self._keys) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._keys:
            name = f"{self.prefix}-{len(self.parts):06d}.h5"
            write_part(self.folder, name, self._keys, np.concatenate(self._feats), self.space, self.kind, self.attrs)
            self.parts.append((name, self._keys))
            self._keys, self._feats = [], []
        self._last = time.monotonic()

    def close(self) -> list[tuple[str, list]]:
        """Flush and merge; returns ``[(part name, its keys)]``."""
        self.flush()
        if len(self.parts) < 2:
            return list(self.parts)
        name = f"{self.prefix}.h5"
        try:
            return [(name, merge_parts(self.folder, self.parts, name, self.space, self.kind, self.attrs))]
        except StorageError:  # merging only tidies up: the segments are complete parts
            return list(self.parts)


@dataclass
class Sources:
    """Where the vector of each key lives: the previous index, parts a killed run left (resumed),
    or this run's parts (new); and the rows of every part."""

    prev: dict[Any, tuple[str, int]] = field(default_factory=dict)
    resumed: dict[Any, tuple[str, int]] = field(default_factory=dict)
    new: dict[Any, tuple[str, int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # parts left out as damaged: name -> why

    def known_hashes(self) -> set:
        return set(self.prev) | set(self.resumed)

    def have(self) -> dict[str, int]:
        """For view keys (sha256, view): sha256 -> bit mask of the views whose vectors exist."""
        masks: dict[str, int] = {}
        for h, v in self.known_hashes():
            masks[h] = masks.get(h, 0) | (1 << v)
        return masks

    def add_new(self, parts: list[tuple[str, list]]) -> None:
        for name, keys in parts:
            self.sizes[name] = len(keys)
            for row, key in enumerate(keys):
                self.new.setdefault(key, (name, row))

    def find(self, key) -> tuple[tuple[str, int], str]:
        """``((part, row), "reused" | "resumed" | "new")`` of a key's vector."""
        for kind, table in (("reused", self.prev), ("resumed", self.resumed), ("new", self.new)):
            if key in table:
                return table[key], kind
        what = f"view {key[1]} of content {key[0][:12]}" if isinstance(key, tuple) else f"content {key[:12]}"
        raise CacheError(f"internal error: no vector for {what}")


def remove_unused_parts(path: Path, keep: set[str], among: set[str] | None = None) -> None:
    remove_unused_files(parts_dir(path), keep, among)


def remove_unused_files(folder: Path, keep: set[str], among: set[str] | None = None) -> None:
    """After a commit: delete the part files in ``folder`` not named in ``keep``, and the folder
    once empty. ``among``: the parts the committing run knew of; another writer's new ones stay."""
    if not folder.is_dir():
        return
    for part in folder.glob("*.h5"):
        if part.name not in keep and (among is None or part.name in among):
            part.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def unreferenced_parts(
    folder: Path, used: set[str], space: FeatureSpace, kind=FEATURE_PARTS, attrs=None
) -> Iterator[tuple[str, list]]:
    """``(name, keys)`` of each part in ``folder`` not in ``used`` (a run that stopped before its
    commit); half-written, damaged and other spaces' parts are deleted. Call under the lock."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*.tmp"):
        with suppress(OSError):  # on read-only media they stay, harmless
            tmp.unlink(missing_ok=True)
    for part in sorted(folder.glob("*.h5")):
        if part.name in used:
            continue
        keys = read_part_keys(part, space, kind, attrs)
        if keys is None:
            with suppress(OSError):
                part.unlink(missing_ok=True)  # never mix another space's vectors in
            continue
        yield part.name, keys
