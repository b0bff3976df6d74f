"""Locks that do not lie: a commit checks, right before its rename, that the index it built on
is still the current one. Two writers that both got past the lock (its file deleted while held,
a file system that ignores locks) cannot silently overwrite each other's commit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import backdate, write_image

import tlx
from tlx.cache.h5format import parts_dir
from tlx.cache.index import CacheIndex, CommitConflict, Row, commit_id, read_index, write_index
from tlx.cache.lock import CacheLock
from tlx.extractor import extract as extract_module
from tlx.extractor.extract import extract


def rows_of(index: CacheIndex) -> list[Row]:
    names = index.part_names
    return [
        Row(p, int(label), split, h, tuple(st), names[part], int(row))
        for p, label, split, h, st, part, row in zip(
            index.paths,
            index.labels.tolist(),
            index.splits,
            index.hashes,
            index.stats.tolist(),
            index.source_part.tolist(),
            index.source_row.tolist(),
            strict=True,
        )
    ]


def recommit(index: CacheIndex, base: str | None) -> None:
    """Write ``index`` again as a commit built on ``base``."""
    sizes = dict(zip(index.part_names, index.part_rows, strict=True))
    assert index.failures is not None
    attrs = {k: v for k, v in index.attrs.items() if k not in ("tlx_format", "feature_space", "n_images")}
    write_index(index.path, rows_of(index), index.classes, index.failures, index.space, attrs, sizes, None, base)


def test_two_commits_built_on_the_same_base_the_second_is_refused(folder_data, tmp_path):
    path = Path(extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=tmp_path / "cache").path)
    index = read_index(path)
    base = commit_id(path)
    assert base and len(base) == 16

    recommit(index, base)  # the first writer: its base is current, so it commits
    first = commit_id(path)
    assert first != base
    with pytest.raises(CommitConflict, match=r"another process committed .* re-run"):
        recommit(index, base)  # the second writer built on the same, now outdated, base
    assert commit_id(path) == first  # the first writer's commit stands
    assert not list(path.parent.glob(".*.tmp"))


def test_a_commit_on_no_cache_is_refused_once_another_made_one(folder_data, tmp_path):
    path = Path(extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=tmp_path / "cache").path)
    with pytest.raises(CommitConflict):
        recommit(read_index(path), None)  # built when there was no index yet


def test_an_extract_whose_base_moved_commits_nothing_and_deletes_no_foreign_part(folder_data, tmp_path, monkeypatch):
    backdate(folder_data)
    cache = tmp_path / "cache"
    path = Path(extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=cache).path)
    write_image(folder_data / "ants" / "new.png", seed=90)
    real_classify = extract_module.classify
    theirs = {}

    def another_writer_commits_meanwhile(*args, **kwargs):
        work = real_classify(*args, **kwargs)
        # what a second process that took a new lock file would do at this moment: commit, and
        # leave a part of its own that no index references yet
        recommit(read_index(path), commit_id(path))
        theirs["commit"] = commit_id(path)
        foreign = parts_dir(path) / "part-another-process.h5"
        foreign.write_bytes((parts_dir(path) / read_index(path).part_names[0]).read_bytes())
        theirs["part"] = foreign
        return work

    monkeypatch.setattr(extract_module, "classify", another_writer_commits_meanwhile)
    with pytest.raises(CommitConflict):
        extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=cache)
    assert commit_id(path) == theirs["commit"]  # their commit stands
    assert theirs["part"].is_file()  # and their part was not deleted as "unused"
    assert len(tlx.load_features(path)) == 6

    monkeypatch.setattr(extract_module, "classify", real_classify)
    again = extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=cache)  # the re-run the error asks for
    assert again.n_images == 7 and np.isfinite(tlx.load_features(path).X).all()


def test_a_lock_on_a_file_removed_while_waiting_is_taken_again_on_the_new_file(tmp_path, monkeypatch):
    import os

    import filelock

    real_acquire = filelock.FileLock.acquire
    calls = []

    def acquire_then_lose_the_file(self, *args, **kwargs):
        held = real_acquire(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            os.unlink(self.lock_file)  # removed just as this process got it: another one could lock a new file
        return held

    monkeypatch.setattr(filelock.FileLock, "acquire", acquire_then_lose_the_file)
    lock = CacheLock(tmp_path / "x.h5")
    with lock:
        assert len(calls) == 2  # the first lock was on a deleted file: taken again
        assert lock._locks_the_file_at_path() and lock.path.is_file()
