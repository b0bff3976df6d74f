"""The stat index: git's way of not re-reading files that did not change.

Beside each content hash the cache keeps the (size, mtime_ns, inode, ctime_ns) of the file it was
computed from (ctime catches what a restored mtime hides: ``touch -d``, ``cp -p`` over a file).
A re-run stats every file and re-hashes only those whose stat differs, so a run where
nothing changed opens no image file. A stat taken within ``RACY_NS`` of the run that recorded
it is not trusted ("racily clean" in git's words): the file could have changed again in the
same timestamp tick without its stat showing it, so it is re-hashed; when its bytes turn out
unchanged the run records it again with its own start time, so it is clean from then on (git's
racy-clean rule: a re-check that found nothing new still refreshes the index). Standard library only.
"""

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


def stat_of(st: os.stat_result) -> Stat:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def stat_file(path: str | os.PathLike) -> Stat | str:
    """The file's stat (links followed), or why it cannot be read."""
    try:
        return stat_of(os.stat(path))
    except FileNotFoundError:
        return NOT_FOUND
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def stat_files(paths: Sequence[str | os.PathLike], threads: int = 8) -> list[Stat | str]:
    """:func:`stat_file` of every path. On network file systems each stat is a round trip, so
    large lists are split over threads (a stat releases the GIL while it waits)."""
    if len(paths) < PARALLEL_STAT_FROM or threads <= 1:
        return [stat_file(p) for p in paths]
    step = -(-len(paths) // threads)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda lo: [stat_file(p) for p in paths[lo : lo + step]], range(0, len(paths), step))
        return [s for part in parts for s in part]


def read_and_hash(path: str | os.PathLike) -> tuple[bytes, str, Stat]:
    """The bytes of a file, their sha256 and the file's stat, from one open and one read.

    The stat is taken from the open file before reading: if the file changes later, its stat
    will differ from the recorded one and the next run re-reads it. The hash is always the hash
    of exactly the bytes returned (which are the bytes decoded), whatever happens meanwhile."""
    with open(path, "rb") as fh:
        st = stat_of(os.fstat(fh.fileno()))
        data = fh.read()
    return data, hashlib.sha256(data).hexdigest(), st


def is_racy(stat: Stat, stat_time_ns: int) -> bool:
    """Was the file modified so close to the moment its stat was recorded that a later change
    in the same timestamp tick could leave the stat unchanged?"""
    return stat[1] >= stat_time_ns - RACY_NS
