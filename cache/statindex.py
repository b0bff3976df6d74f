"""The stat index, git's way of not re-reading files that did not change: each content hash keeps
its file's (size, mtime_ns, inode, ctime_ns), and a re-run re-hashes only files whose stat differs.
A stat within ``RACY_NS`` of the run that recorded it is "racily clean" (the file could change in
the same tick unseen): it is re-hashed, then recorded again with the new run's start time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

Stat = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns

# Two seconds covers the coarsest common timestamp granularity (FAT; NFS servers may round to 1 s).
RACY_NS = 2_000_000_000
NOT_FOUND = "file not found (a dangling link, or deleted while running)"
PARALLEL_STAT_FROM = 20_000  # below this, a plain loop is faster than starting threads
STAT_THREADS = 8


def stat_of(st: os.stat_result) -> Stat:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def read_error(exc: OSError) -> str:
    """Why a file cannot be read, as an image's failure reason."""
    reasons = {FileNotFoundError: NOT_FOUND, IsADirectoryError: "is a folder"}
    return reasons.get(type(exc), f"cannot read: {exc.strerror or exc}")


def stat_file(path: str | os.PathLike) -> Stat | str:
    """The file's stat (links followed), or why it cannot be read."""
    try:
        return stat_of(os.stat(path))
    except OSError as exc:
        return read_error(exc)


def stat_files(paths: Sequence[str | os.PathLike]) -> list[Stat | str]:
    """:func:`stat_file` of every path. On network file systems each stat is a round trip, so
    large lists are split over threads (a stat releases the GIL while it waits)."""
    if len(paths) < PARALLEL_STAT_FROM:
        return [stat_file(p) for p in paths]
    step = -(-len(paths) // STAT_THREADS)
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        parts = pool.map(lambda lo: [stat_file(p) for p in paths[lo : lo + step]], range(0, len(paths), step))
        return [s for part in parts for s in part]


def read_and_hash(path: str | os.PathLike) -> tuple[bytes, str, Stat]:
    """The bytes of a file, their sha256 and its stat (taken before reading: a later change
    shows in the next run's stat), from one open and one read."""
    with open(path, "rb") as fh:
        st = stat_of(os.fstat(fh.fileno()))
        data = fh.read()
    return data, hashlib.sha256(data).hexdigest(), st


def is_racy(stat: Stat, stat_time_ns: int) -> bool:
    """Could a later change in the same timestamp tick leave this recorded stat unchanged?"""
    return stat[1] >= stat_time_ns - RACY_NS
