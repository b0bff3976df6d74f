"""Advice never destroys data: a part file or a foreign .h5 is named for what it is, never
advised for deletion, and never listed or picked as a cache; a folder's cache is chosen by the
time its index records, not by file times."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import pytest
from synthetic_cache import commit, names_of_round

import tlx
from tlx.cache.catalog import list_caches
from tlx.cache.features import resolve_cache
from tlx.cache.h5format import parts_dir
from tlx.errors import CacheError


@pytest.fixture
def folder(tmp_path) -> Path:
    """A cache folder holding a cache, and a user's own .h5 beside it."""
    where = tmp_path / "cache"
    commit(where / "synthetic.h5", names_of_round(0), "r000")
    with h5py.File(where / "mine.h5", "w") as f:
        f["weights"] = [1.0, 2.0]
    return where


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "delete" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("info",), ("cache", "compact"), ("cache", "verify")])
def test_a_part_file_is_named_as_a_part_of_its_cache(folder, cli, command):
    [part] = parts_dir(folder / "synthetic.h5").glob("*.h5")
    before = part.read_bytes()
    line = one_line(cli(*command, part))
    assert f"is a part of the cache {folder / 'synthetic.h5'}, not a cache: pass {folder / 'synthetic.h5'}" in line
    assert part.read_bytes() == before


@pytest.mark.parametrize("command", [("info",), ("cache", "compact"), ("cache", "verify"), ("fit-head", "--features")])
def test_a_foreign_h5_is_not_a_tlx_cache_and_is_left_alone(folder, cli, command):
    mine = folder / "mine.h5"
    before = mine.read_bytes()
    assert "is not a tlx feature cache" in one_line(cli(*command, mine))
    assert mine.read_bytes() == before


def test_folders_list_and_pick_only_tlx_indexes(folder, cli):
    assert list_caches(folder) == [folder / "synthetic.h5"]
    assert list_caches(parts_dir(folder / "synthetic.h5")) == []  # parts are no caches
    rows = cli("info", folder, "--json")
    assert rows.exit_code == 0 and [Path(r["path"]).name for r in rows.json()] == ["synthetic.h5"]
    assert "mine.h5" not in rows.stderr
    assert resolve_cache(folder) == folder / "synthetic.h5"


def test_a_damaged_index_is_reported_without_advice_to_delete(folder, cli):
    index = folder / "synthetic.h5"
    index.write_bytes(index.read_bytes()[:300])
    line = one_line(cli("info", index))
    assert str(index) in line and "tlx extract" in line
    with pytest.raises(CacheError) as err:
        tlx.load_features(index)
    assert "delete" not in str(err.value)


def test_the_newest_cache_is_the_one_its_index_says_was_updated_last(tmp_path):
    where = tmp_path / "cache"
    commit(where / "old.h5", names_of_round(0), "a", updated="2026-01-01T10:00:00+0000")
    commit(where / "new.h5", names_of_round(1), "b", updated="2026-01-02T10:00:00+0000")
    os.utime(where / "old.h5", (2e9, 2e9))  # a copy or a touch: the file time says nothing
    assert list_caches(where) == [where / "new.h5", where / "old.h5"]
    assert tlx.load_features(where).path == where / "new.h5"


def test_caches_of_several_datasets_are_refused_unless_the_working_folder_names_one(tmp_path, monkeypatch):
    where = tmp_path / "cache"
    commit(where / "ants.h5", names_of_round(0), "a", dataset="ants")
    commit(where / "bees.h5", names_of_round(0), "b", dataset="bees")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CacheError, match=r"2 datasets \(ants: ants.h5; bees: bees.h5\): pass --features FILE"):
        resolve_cache(where)
    (tmp_path / "bees").mkdir()
    monkeypatch.chdir(tmp_path / "bees")
    assert resolve_cache(where) == where / "bees.h5"
