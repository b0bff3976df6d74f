"""Every reader sees one committed version of a cache, whole, while writers commit and compact."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from synthetic_cache import commit, mismatches, names_of_round, sha, vector

import tlx
from tlx.cache.compact import compact
from tlx.cache.h5format import UnreadableCacheError, parts_dir


@pytest.fixture
def cache(tmp_path) -> Path:
    path = tmp_path / "cache" / "synthetic.h5"
    commit(path, names_of_round(0), "r000")
    return path


def test_a_lazy_load_reads_the_version_it_opened_after_a_commit_and_a_compaction(cache):
    feats = tlx.load_features(cache, lazy=True)
    old_parts = set(parts_dir(cache).glob("*.h5"))
    commit(cache, names_of_round(3), "r003")  # new contents, moved rows
    compact(cache)  # every part of the first version is unlinked
    assert not old_parts & set(parts_dir(cache).glob("*.h5"))
    assert feats.paths == names_of_round(0)
    X = feats.X.to_array()
    assert mismatches(feats.paths, feats.sha256, feats.y, X) == 0
    np.testing.assert_array_equal(X, np.stack([vector(sha(n)) for n in names_of_round(0)]))
    streamed = np.concatenate([block for block, _ in feats.iter_chunks(rows=5)])
    np.testing.assert_array_equal(streamed, X)
    half = feats.subset(np.arange(0, len(feats), 2))
    assert mismatches(half.paths, half.sha256, half.y, half.X.to_array()) == 0
    now = tlx.load_features(cache)  # a new load sees the new version
    assert now.paths == names_of_round(3) and mismatches(now.paths, now.sha256, now.y, now.X) == 0


def test_rows_interleaved_across_parts_read_back_in_order(cache):
    commit(cache, names_of_round(2), "r002")  # new contents sort between the old ones
    feats = tlx.load_features(cache, lazy=True)
    parts = feats.X.snapshot.table("features").part
    assert len(set(parts.tolist())) == 2 and np.any(np.diff(parts) < 0)  # really interleaved
    assert mismatches(feats.paths, feats.sha256, feats.y, feats.X.to_array()) == 0
    picked = feats.subset(np.array([7, 1, 12, 3]))
    assert mismatches(picked.paths, picked.sha256, picked.y, picked.X[0:4]) == 0


def test_predicts_cache_lookup_reads_one_version(cache):
    from tlx.cache.reader import open_snapshot
    from tlx.inference.cached import read_rows

    with open_snapshot(cache) as snap:
        commit(cache, names_of_round(4), "r004")
        compact(cache)
        rows = [5, 0, 7, 5]
        expected = np.stack([vector(sha(names_of_round(0)[r])) for r in rows])
        np.testing.assert_array_equal(read_rows(snap, rows, block=2), expected)


def test_a_part_missing_without_a_commit_is_damage_not_a_retry(cache):
    for part in parts_dir(cache).glob("*.h5"):
        part.unlink()
    with pytest.raises(UnreadableCacheError, match=r"part file .* is missing"):
        tlx.load_features(cache)


# --------------------------------------------------------------------------- two processes

ROUNDS = 24


def _writer(path: str, reader_started, done) -> None:
    reader_started.wait(120)  # the reader holds the first version before anything changes
    for r in range(1, ROUNDS + 1):
        commit(Path(path), names_of_round(r), f"r{r:03d}")
        if r % 3 == 0:
            compact(path)
    done.set()


def _reader(path: str, reader_started, done, results) -> None:
    loads = mixed = failures = 0
    first_failure = ""
    for i in range(1_000_000):  # bounded; ends once the writer is done and one more load was checked
        finished = done.is_set()
        try:
            feats = tlx.load_features(path, lazy=bool(i % 2))
            X = feats.X.to_array() if feats.lazy else feats.X
            mixed += mismatches(feats.paths, feats.sha256, feats.y, X) > 0
            loads += 1
        except Exception as exc:  # counted: the test asserts there are none
            failures += 1
            first_failure = first_failure or f"{type(exc).__name__}: {exc}"
        reader_started.set()
        if finished:
            break
    results.put((loads, mixed, failures, first_failure))


def test_loads_while_a_writer_commits_and_compacts_are_never_mixed(cache):
    ctx = multiprocessing.get_context("spawn")
    reader_started, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(cache), reader_started, done))
    reader = ctx.Process(target=_reader, args=(str(cache), reader_started, done, results))
    reader.start()
    writer.start()
    loads, mixed, failures, first_failure = results.get(timeout=300)
    writer.join(60)
    reader.join(60)
    assert writer.exitcode == 0 and reader.exitcode == 0
    assert (mixed, failures) == (0, 0), first_failure
    assert loads >= 2
    assert tlx.load_features(cache).paths == names_of_round(ROUNDS)
