"""The bottom of the cache: format constants, where a cache's files live, and the dataset
helpers every other cache module reads and writes with (it knows no parts, index or views)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1: one self-contained file (tlx before the part layout), read-only
STR = h5py.string_dtype()
HASH = h5py.string_dtype("ascii", 64)  # a hex sha256: fixed width, so it compresses and costs no heap
STAT_FIELDS = ("size", "mtime_ns", "ino", "ctime_ns")  # the stat index's columns (ctime_ns: -1 in older caches)


def parts_dir(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".parts")


def views_dir(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".views")


def rows_per_chunk(width: int) -> int:
    # h5py's advice: chunks between ~10 KiB and 1 MiB; aim for 256 KiB of float32 rows.
    return int(max(1, min(4096, (256 * 1024) // (4 * max(1, width)))))


def attrs_of(f) -> dict:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def decode_strings(ds) -> list[str]:
    """The strings of ``ds``; bytes that are not UTF-8 come back as the surrogate escapes they
    were written from, so a file name in another encoding round-trips."""
    if not len(ds):
        return []
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds.asstr(errors="surrogateescape")[()]]


def open_h5(path: Path) -> h5py.File:
    """``h5py.File(path, "r")``, without HDF5's file locking where it fails (read-only mounts)."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or "lock" not in str(exc).lower():
            raise
        return h5py.File(path, "r", locking=False)


def read_attrs(path: Path) -> dict:
    with open_h5(path) as f:
        return attrs_of(f)


class UnreadableCacheError(CacheError):
    """A cache file that cannot be read (truncated, damaged); ``reason`` without the advice, for
    callers that act themselves. The advice deletes nothing: extract rebuilds an index in place."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{reason}; run `tlx extract` on its data again to rebuild it")
        self.path, self.reason = path, reason


def missing_part(cache: Path, part: Path) -> UnreadableCacheError:
    """A part the index names is not there (HDF5 would read it as NaN, silently)."""
    kind = "view part" if part.parent.name.endswith(".views") else "part file"
    return UnreadableCacheError(
        cache, f"{cache} is damaged: its {kind} {part.parent.name}/{part.name} is missing (deleted or not copied)"
    )


def read_failed(f) -> dict[str, str]:
    """The images an index records as unreadable: relative path -> why."""
    return dict(zip(decode_strings(f["failed/paths"]), decode_strings(f["failed/reasons"]), strict=True))


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


def write_strings(group, name: str, values: list[str]):
    """UTF-8 strings; a file name that is not UTF-8 on disk is stored as its own bytes
    (surrogateescape), not refused: every file of the data is one row, whatever its name."""
    raw = [v.encode("utf-8", "surrogateescape") for v in values]
    return group.create_dataset(
        name, data=np.array(raw, dtype=object), dtype=STR, maxshape=(None,), chunks=True if values else None
    )


def write_array(group, name: str, data: np.ndarray, dtype=None):
    """A 1-D metadata array, gzip-compressed (hashes and stats shrink several times over)."""
    # gzip at level 1; an empty array gets h5py's default chunks
    gzip = {"chunks": (min(len(data), 65536),), "compression": 1, "shuffle": dtype is None} if len(data) else {}
    return group.create_dataset(name, data=data, dtype=dtype or data.dtype, maxshape=(None,), **gzip)


def write_sources(group, folder: str, parts: list[str], part_rows, sizes: dict[str, int], width: int, dtype) -> None:
    """Where row i's vector lives (row ``part_rows[i]`` of part ``parts[i]``) as an index stores
    it: ``parts/names``, ``parts/rows``, ``source/part``, ``source/row``; and ``features``, a
    virtual dataset over the parts for plain h5py (relative sources: the folder can be moved)."""
    names, numbers = np.unique(np.asarray(parts, dtype=str), return_inverse=True)
    write_array(group, "source/part", numbers.astype(np.int32))
    write_array(group, "source/row", np.asarray(part_rows, dtype=np.int64))
    write_strings(group, "parts/names", names.tolist())
    write_array(group, "parts/rows", np.array([sizes[n] for n in names.tolist()], dtype=np.int64))
    if not len(parts):
        group.create_dataset("features", shape=(0, width), maxshape=(None, width), dtype=dtype, chunks=(1, width))
        return
    layout = h5py.VirtualLayout(shape=(len(parts), width), dtype=dtype)
    sources = {n: h5py.VirtualSource(f"{folder}/{n}", "features", shape=(sizes[n], width)) for n in set(parts)}
    start = 0
    for i in range(1, len(parts) + 1):
        if i == len(parts) or parts[i] != parts[start] or part_rows[i] != part_rows[i - 1] + 1:
            first = int(part_rows[start])
            layout[start:i] = sources[parts[start]][first : first + i - start]
            start = i
    group.create_virtual_dataset("features", layout, fillvalue=np.nan)  # a missing part reads as NaN
