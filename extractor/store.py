"""The HDF5 feature cache: one file per dataset and feature space.

Crash safety comes from never modifying a complete cache in place:

* features computed during a run go to a *journal* next to the cache, one small ``.npz``
  shard per batch, each written to a temporary name and atomically renamed, so a kill -9
  loses at most the batch in flight;
* when the run ends, the new cache is written to a temporary file, fsynced, and renamed
  over the old one (``os.replace`` is atomic), then the journal is removed.

A killed run therefore leaves the previous complete cache valid, and the next run resumes
from the journal. Concurrent runs on one cache are serialized by an advisory lock file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tlx.common.atomic import atomic_path, write_atomic
from tlx.errors import CacheError
from tlx.extractor.config import FeatureSpace

FORMAT_VERSION = 1
STR = h5py.string_dtype()


def default_cache_dir() -> Path:
    return Path(os.environ.get("TLX_CACHE_DIR", "cache"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "data"


def cache_file_prefix(dataset_name: str, backbone: str, pooling: str) -> str:
    """The part of a cache's file name known before the network is built."""
    return f"{_slug(dataset_name)}-{_slug(backbone)}-{pooling}-"


def cache_file_name(dataset_name: str, dataset_root: str, space: FeatureSpace) -> str:
    import hashlib

    ident = hashlib.sha256(f"{space.key}|{dataset_root}".encode()).hexdigest()[:10]
    return f"{cache_file_prefix(dataset_name, space.backbone, space.pooling)}{ident}.h5"


def _rows_per_chunk(width: int) -> int:
    # h5py's advice: chunks between ~10 KiB and 1 MiB; aim for 256 KiB of float32 rows.
    return int(max(1, min(4096, (256 * 1024) // (4 * max(1, width)))))


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

    def row_of_hash(self) -> dict[str, int]:
        return {h: i for i, h in enumerate(self.hashes)}


def decode_strings(ds) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds.asstr()[()]] if len(ds) else []


def read_attrs(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


class UnreadableCacheError(CacheError):
    """A cache file that cannot be read (truncated, foreign, damaged). ``reason`` says what is
    wrong without advice, for callers that act on it themselves (extract rebuilds it)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{reason}; delete it and re-run `tlx extract`")
        self.path = path
        self.reason = reason


def read_index(path: Path) -> CacheIndex:
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if attrs.get("tlx_format") != FORMAT_VERSION:
                raise UnreadableCacheError(
                    path,
                    f"{path} is not a tlx feature cache (format {attrs.get('tlx_format')!r}, expected {FORMAT_VERSION})",
                )
            return CacheIndex(
                path=path,
                space=FeatureSpace.from_dict(json.loads(attrs["feature_space"])),
                paths=decode_strings(f["paths"]),
                hashes=decode_strings(f["content_sha256"]),
                labels=f["labels"][()],
                splits=decode_strings(f["split"]),
                classes=decode_strings(f["classes"]),
                failed=dict(zip(decode_strings(f["failed/paths"]), decode_strings(f["failed/reasons"]), strict=False)),
                attrs=attrs,
            )
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None


def read_summary(path: Path) -> dict:
    """What ``tlx info`` shows of a cache, without reading its features or paths; raises
    :class:`UnreadableCacheError` for a file that is not a complete tlx cache."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if attrs.get("tlx_format") != FORMAT_VERSION:
                raise UnreadableCacheError(
                    path,
                    f"{path} is not a tlx feature cache (format {attrs.get('tlx_format')!r}, expected {FORMAT_VERSION})",
                )
            n = int(attrs["n_images"])
            lengths = {name: len(f[name]) for name in ("features", "labels", "paths", "split", "content_sha256")}
            if set(lengths.values()) != {n}:
                raise UnreadableCacheError(
                    path, f"{path} is damaged: it should hold {n} images but its datasets hold {lengths}"
                )
            failed = dict(zip(decode_strings(f["failed/paths"]), decode_strings(f["failed/reasons"])))
            space = json.loads(attrs["feature_space"])
    except (OSError, KeyError, ValueError) as exc:
        raise UnreadableCacheError(path, f"{path} is not a readable tlx feature cache ({exc})") from None
    return {
        "path": str(path),
        "dataset": attrs.get("dataset_name"),
        "dataset_root": attrs.get("dataset_root"),
        "backbone": attrs.get("backbone"),
        "pooling": attrs.get("pooling"),
        "n_images": n,
        "feature_dim": int(attrs.get("feature_dim", 0)),
        "updated": attrs.get("updated"),
        "weights_sha256": space.get("weights_sha256"),
        "n_failed": len(failed),
        "failed": [{"path": p, "reason": r} for p, r in failed.items()],
    }


# --------------------------------------------------------------------------- journal


class Journal:
    """Shards of features computed by an unfinished run, keyed by image content hash."""

    def __init__(self, cache_path: Path, space: FeatureSpace):
        self.dir = cache_path.with_name(cache_path.name + ".journal")
        self.space = space
        self._next = 0

    @staticmethod
    def exists_for(cache_path: Path) -> bool:
        """Did a run on this cache stop before it finished (its features wait in a journal)?"""
        return cache_path.with_name(cache_path.name + ".journal").is_dir()

    def load_index(self) -> dict[str, tuple[Path, int]]:
        """Content hash -> (shard, row) for every completed shard of this feature space."""
        if not self.dir.is_dir():
            return {}
        marker = self.dir / "space.json"
        try:
            if json.loads(marker.read_text()) != self.space.to_dict():
                self.clear()  # another feature space: never mix its vectors in
                return {}
        except (OSError, ValueError):
            self.clear()
            return {}
        index = {}
        shards = sorted(self.dir.glob("part-*.npz"))
        for shard in shards:
            try:
                with np.load(shard, allow_pickle=False) as z:
                    for row, h in enumerate(z["hashes"].tolist()):
                        index[h] = (shard, row)
            except (OSError, ValueError, KeyError):
                shard.unlink(missing_ok=True)  # cannot happen after an atomic rename, but be safe
        if shards:
            self._next = int(shards[-1].stem.split("-")[1]) + 1
        return index

    def append(self, hashes: list[str], features: np.ndarray) -> None:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True)
            (self.dir / "space.json").write_text(json.dumps(self.space.to_dict()))
        arrays = {"hashes": np.array(hashes, dtype="U64"), "features": features.astype(np.float32, copy=False)}
        write_atomic(self.dir / f"part-{self._next:08d}.npz", lambda fh: np.savez(fh, **arrays), mode="wb")
        self._next += 1

    def clear(self) -> None:
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                p.unlink(missing_ok=True)
            self.dir.rmdir()


class ShardReader:
    """Reads journal rows with a small LRU of open shards, so memory stays flat."""

    def __init__(self, max_open: int = 8):
        self._open: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.max_open = max_open

    def row(self, shard: Path, row: int) -> np.ndarray:
        if shard not in self._open:
            with np.load(shard, allow_pickle=False) as z:
                self._open[shard] = z["features"]
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        self._open.move_to_end(shard)
        return self._open[shard][row]


# --------------------------------------------------------------------------- writing


@dataclass
class Row:
    """Where one image's vector comes from when a new cache is assembled."""

    path: str
    label: int
    split: str
    sha256: str
    old_row: int | None = None  # row in the previous complete cache
    shard: tuple[Path, int] | None = None  # or (shard, row) in the journal


def write_cache(
    path: Path,
    rows: list[Row],
    classes: list[str],
    failed: dict[str, str],
    space: FeatureSpace,
    attrs: dict,
    old_cache: Path | None,
    block: int = 2048,
) -> None:
    """Assemble a complete cache in a temporary file and atomically put it at ``path``."""
    width = space.feature_dim
    shards = ShardReader()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="latest") as f, h5py.File(old_cache, "r") if old_cache else _null() as old:
            chunk = _rows_per_chunk(width)
            n = len(rows)
            feats = f.create_dataset(
                "features", shape=(n, width), maxshape=(None, width), dtype="f4", chunks=(min(chunk, max(n, 1)), width)
            )
            # Copy in blocks so memory stays flat however large the dataset is.
            for start in range(0, n, block):
                part = rows[start : start + block]
                out = np.empty((len(part), width), dtype=np.float32)
                old_rows = [(i, r.old_row) for i, r in enumerate(part) if r.old_row is not None]
                if old_rows:
                    order = sorted(old_rows, key=lambda t: t[1])
                    idx = np.array([o for _, o in order])
                    uniq, inverse = np.unique(idx, return_inverse=True)
                    got = old["features"][uniq.tolist()]  # h5py wants increasing indices
                    for (i, _), j in zip(order, inverse, strict=False):
                        out[i] = got[j]
                for i, r in enumerate(part):
                    if r.old_row is None:
                        out[i] = shards.row(*r.shard)
                feats[start : start + len(part)] = out
            _string_dataset(f, "paths", [r.path for r in rows])
            _string_dataset(f, "split", [r.split for r in rows])
            _string_dataset(f, "content_sha256", [r.sha256 for r in rows])
            f.create_dataset(
                "labels", data=np.array([r.label for r in rows], dtype=np.int64), maxshape=(None,), chunks=True
            )
            _string_dataset(f, "classes", classes)
            g = f.create_group("failed")
            _string_dataset(g, "paths", list(failed))
            _string_dataset(g, "reasons", list(failed.values()))
            for key, value in attrs.items():
                f.attrs[key] = (
                    str(value) if isinstance(value, str) else value
                )  # str subclasses (TorchVersion) confuse h5py
            f.attrs["tlx_format"] = FORMAT_VERSION
            f.attrs["feature_space"] = json.dumps(space.to_dict())
            f.attrs["n_images"] = len(rows)
            f.attrs["feature_dim"] = width


def remove_stale_temporaries(path: Path) -> None:
    """Delete half-written caches left by killed runs; call only while holding the cache lock."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _string_dataset(group, name: str, values: list[str]):
    return group.create_dataset(
        name, data=np.array(values, dtype=object), dtype=STR, maxshape=(None,), chunks=True if values else None
    )


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- locking


class CacheLock:
    """Advisory lock on ``<cache>.lock``: a second extract on the same cache waits its turn.

    ``filelock`` uses the operating system's lock (flock on POSIX, msvcrt on Windows), which is
    released when its holder dies, even by kill -9, so a stale lock cannot block the next run.
    It is imported here, not at the top, so that reading a cache needs no locking at all.
    """

    def __init__(self, cache_path: Path, on_wait=None):
        self.path = cache_path.with_name(cache_path.name + ".lock")
        self.on_wait = on_wait
        self._lock = None

    def __enter__(self):
        import filelock

        self._lock = filelock.FileLock(self.path)
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            if self.on_wait:
                self.on_wait(f"another tlx extract is writing {self.path.with_suffix('')}; waiting for it to finish")
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()
        return False


def list_caches(where: Path) -> list[Path]:
    """Complete caches under a folder (or the file itself), newest first."""
    if where.is_file():
        return [where]
    if not where.is_dir():
        return []
    files = [p for p in where.glob("*.h5") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
