"""The stat index ends re-reading: files re-checked because they were racy, and found with the
same bytes, are recorded clean (git's racy-clean rule), and ctime joins size, mtime and inode."""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import pytest
from conftest import backdate

from tlx.cache.index import commit_id, read_index
from tlx.extractor import extract as extract_module
from tlx.extractor.extract import extract


@pytest.fixture
def clock(monkeypatch):
    """The extract's start time, moved by hand: no test waits out the 2 s racy window."""
    offset = [0]
    real = time.time_ns
    monkeypatch.setattr(extract_module.time, "time_ns", lambda: real() + offset[0])
    return offset


def run(data, cache):
    return extract(data, backbone="tiny_cnn", workers=0, cache_dir=cache)


def test_freshly_copied_files_are_re_read_once_then_never(folder_data, tmp_path, clock):
    cache = tmp_path / "cache"
    first = run(folder_data, cache)  # the files were written just now: all racy
    assert first.n_opened == 6
    clock[0] = 3_000_000_000  # a later run, past the racy window of the files' mtime
    second = run(folder_data, cache)
    assert (second.n_opened, second.n_new, second.n_reused) == (6, 0, 6)  # re-checked: the same bytes
    assert second.written  # ... so recorded clean, with this run's start time
    clock[0] = 6_000_000_000
    third = run(folder_data, cache)
    assert (third.n_opened, third.written) == (0, False)


def test_a_run_that_reads_nothing_writes_nothing(folder_data, tmp_path):
    backdate(folder_data)
    cache = tmp_path / "cache"
    first = run(folder_data, cache)
    before = os.stat(first.path).st_ino, commit_id(Path(first.path))
    again = run(folder_data, cache)
    assert (again.n_opened, again.written) == (0, False)
    assert (os.stat(first.path).st_ino, commit_id(Path(first.path))) == before


def test_a_change_that_keeps_size_and_mtime_is_seen_by_ctime(folder_data, tmp_path):
    backdate(folder_data)
    cache = tmp_path / "cache"
    first = read_index(Path(run(folder_data, cache).path))
    old = dict(zip(first.paths, first.hashes, strict=True))
    target = folder_data / "ants" / "ants_1.png"
    st = os.stat(target)
    other = (folder_data / "ants" / "ants_2.png").read_bytes()
    data = bytearray(target.read_bytes())
    data[-40:-12] = other[-40:-12] if len(other) >= 40 else bytes(28)  # same size, other bytes
    with open(target, "r+b") as fh:  # in place: same inode
        fh.write(data)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back
    assert (os.stat(target).st_size, os.stat(target).st_mtime_ns, os.stat(target).st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    again = run(folder_data, cache)
    assert again.n_reused == 5 and again.n_new + again.n_failed == 1  # only the changed file was read again
    index = read_index(Path(again.path))
    now = dict(zip(index.paths, index.hashes, strict=True))
    assert now.get("ants/ants_1.png") != old["ants/ants_1.png"]  # re-hashed (or now a failure)


def test_an_index_without_ctime_re_hashes_once_then_records_it(folder_data, tmp_path):
    backdate(folder_data)
    cache = tmp_path / "cache"
    path = Path(run(folder_data, cache).path)
    with h5py.File(path, "r+") as f:  # as an older tlx wrote it
        del f["stat/ctime_ns"]
        del f["failed/ctime_ns"]
    assert (read_index(path).stats[:, 3] == -1).all()
    once = run(folder_data, cache)
    assert (once.n_opened, once.n_new, once.n_reused, once.written) == (6, 0, 6, True)
    assert (read_index(path).stats[:, 3] > 0).all()
    assert run(folder_data, cache).n_opened == 0
