"""Planning an incremental run against the previous cache: which images are known (stat
unchanged and not racy: not opened), failed, or to read; and where each row's vector comes
from (the previous index, parts an unfinished run left, or this run's parts)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .h5format import parts_dir
from .index import CacheIndex, Failures, Row, orphan_parts
from .parts import Sources
from .statindex import Stat, is_racy, read_and_hash, stat_files
from .verify import DAMAGED, MISSING, check_part, damaged_parts, expected_hashes


class Entry(Protocol):
    """One image of a listing: where it is, its class and its split."""

    @property
    def relpath(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def split(self) -> str: ...


class Listing(Protocol):
    """The images of a dataset as discovery lists them (``tlx.extractor.discovery.DatasetIndex``)."""

    @property
    def items(self) -> Sequence[Entry]: ...
    @property
    def classes(self) -> list[str]: ...
    def abspath(self, item) -> Path: ...


RECHECK_HERE_MAX = 10_000  # more changed-stat files than this are re-hashed by the ranks' workers instead


@dataclass
class Work:
    known: dict[int, tuple[str, Stat]] = field(default_factory=dict)  # item -> (sha256, stat)
    failed: Failures = field(default_factory=Failures)
    to_read: list[int] = field(default_factory=list)  # items whose bytes must be read by a worker
    n_rehashed: int = 0  # files opened here to re-hash them


def classify(index: Listing, prev: CacheIndex | None, known_hashes, rehash: bool) -> Work:
    """Sort the dataset's images into known / failed / to read, opening no file whose stat is
    unchanged. ``known_hashes``: the content hashes whose vectors exist (cache and resumable parts)."""
    work = Work()
    stats = stat_files([index.abspath(it) for it in index.items])
    usable = prev is not None and prev.format >= 2 and not rehash
    row_of = {p: i for i, p in enumerate(prev.paths)} if usable and prev else {}
    failures = prev.failures if usable and prev and prev.failures else Failures()
    stat_time = prev.stat_time_ns if prev else 0
    recheck: list[int] = []
    for k, (item, st) in enumerate(zip(index.items, stats, strict=True)):
        rel = item.relpath
        if isinstance(st, str):
            work.failed.add(rel, st)
            continue
        i = row_of.get(rel)
        fresh = not is_racy(st, stat_time)
        if i is not None and prev is not None and tuple(prev.stats[i]) == st and fresh:
            if prev.hashes[i] in known_hashes:
                work.known[k] = (prev.hashes[i], st)
            else:  # unchanged file, but its vector was in a damaged part: read it again
                work.to_read.append(k)
        elif rel in failures.reasons and failures.stats.get(rel) == st and fresh:
            work.failed.add(rel, failures.reasons[rel], st, failures.hashes.get(rel, ""))
        elif i is not None or rel in failures.reasons or (rehash and prev is not None):
            recheck.append(k)  # was there before: most likely the same bytes (touched, copied back)
        else:
            work.to_read.append(k)
    if len(recheck) > RECHECK_HERE_MAX:
        work.to_read = sorted(work.to_read + recheck)  # the workers re-hash and skip known bytes
    else:
        _recheck(index, recheck, work, known_hashes, failures)
    return work


def _recheck(index: Listing, positions: list[int], work: Work, known_hashes, failures: Failures) -> None:
    """Re-hash files whose stat changed: known bytes are reused (no decode, no network), bytes
    that failed before fail the same way; anything else is read again by a worker."""

    def one(k: int):
        try:
            _, digest, st = read_and_hash(index.abspath(index.items[k]))
            return k, digest, st
        except OSError:
            return k, "", None  # the worker reads it again and records why it fails

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, positions))
    failed_hash_reason = {failures.hashes[p]: r for p, r in failures.reasons.items() if p in failures.hashes}
    work.n_rehashed += len(results)
    for k, digest, st in results:
        if digest and digest in known_hashes:
            work.known[k] = (digest, st)
        elif digest and digest in failed_hash_reason:
            work.failed.add(index.items[k].relpath, failed_hash_reason[digest], st, digest)
        else:
            work.to_read.append(k)
    work.to_read.sort()


def sources_for(path: Path, prev: CacheIndex | None, space) -> Sources:
    """The previous index's vectors, and those of parts left by runs that did not finish; a part
    that fails :func:`~tlx.cache.verify.check_part` is left out, so only its images are read again."""
    src = Sources()
    prev = prev if prev is not None and prev.format >= 2 else None
    if prev is not None:
        src.damaged = damaged_parts(parts_dir(path), expected_hashes(prev.sources(), prev.hashes))
        src.prev = {h: s for h, s in prev.source_of_hash().items() if s[0] not in src.damaged}
        src.sizes.update(zip(prev.part_names, prev.part_rows, strict=True))
    resumed = {h: s for h, s in orphan_parts(path, prev, space).items() if h not in src.prev}
    for name in sorted({part for part, _ in resumed.values()}):
        status, why, rows = check_part(parts_dir(path) / name)
        if status in (DAMAGED, MISSING):
            src.damaged[name] = why
        src.sizes[name] = rows
    src.resumed = {h: s for h, s in resumed.items() if s[0] not in src.damaged}
    return src


def plan_rows(index: Listing, found: dict[int, tuple[str, Stat]], failed: Failures, src: Sources):
    """The new cache's rows in dataset order, and how many vectors came from each source."""
    class_of = {c: k for k, c in enumerate(index.classes)}
    rows, counts = [], {"reused": 0, "resumed": 0, "new": 0}
    for k, item in enumerate(index.items):
        if item.relpath in failed.reasons or k not in found:
            continue
        digest, st = found[k]
        (part, part_row), kind = src.find(digest)
        counts[kind] += 1
        rows.append(Row(item.relpath, class_of[item.label], item.split, digest, st, part, part_row))
    return rows, counts


def same_index(prev: CacheIndex | None, rows: list[Row], classes: list[str], failed: Failures) -> bool:
    """Would ``rows`` make exactly the index ``prev`` is (stats and sources included)?"""
    if prev is None or prev.format < 2 or prev.failures is None:
        return False
    return (
        [r.path for r in rows] == prev.paths
        and [r.sha256 for r in rows] == prev.hashes
        and [r.label for r in rows] == prev.labels.tolist()
        and [r.split for r in rows] == prev.splits
        and [r.stat for r in rows] == [tuple(s) for s in prev.stats.tolist()]
        and [(r.part, r.part_row) for r in rows] == prev.sources()
        and classes == prev.classes
        and failed == prev.failures
    )
