"""Reading needs no write access: fit-head, predict, info, verify and load_features on a cache
that lies on a read-only file system (a real read-only mount, so nothing can cheat)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_folder_dataset

import tlx
from tlx.extractor.extract import extract


@pytest.fixture
def read_only_cache(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only file system")
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    made = Path(extract(data, backbone="tiny_cnn", cache_dir=tmp_path / "made", workers=0).path)
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no privilege in this container)")
    try:
        shutil.copytree(made.parent, mount / "cache")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield data, mount / "cache" / made.name
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_fit_predict_info_and_verify_work_on_a_read_only_cache(read_only_cache, cli, tmp_path):
    data, cache = read_only_cache
    with pytest.raises(OSError):
        (cache.parent / "probe").write_text("x")  # the mount really is read-only
    before = sorted(p.name for p in cache.parent.rglob("*"))
    assert len(tlx.load_features(cache)) == 8 and tlx.load_features(cache, lazy=True).X.to_array().shape == (8, 32)
    assert cli("info", cache.parent).exit_code == 0
    assert cli("cache", "verify", cache).exit_code == 0
    fit = cli("fit-head", "--features", cache, "--clf", "linear", "--out", tmp_path / "run", "--json")
    assert fit.exit_code == 0, fit.stderr
    out = cli("predict", data / "ants", "--run", tmp_path / "run", "--workers", "0", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["n_reused"] == 4  # the vectors came from the cache
    assert sorted(p.name for p in cache.parent.rglob("*")) == before


def test_a_cache_held_open_without_file_locking_is_still_listed_and_read(tmp_path):
    """A reader on media where HDF5's locking fails holds its files open without locking; HDF5
    then refuses to open them again with locking in that process, and tlx falls back."""
    import h5py
    from synthetic_cache import commit, names_of_round

    from tlx.cache.catalog import list_caches
    from tlx.cache.index import read_index

    path = tmp_path / "cache" / "synthetic.h5"
    commit(path, names_of_round(0), "r000")
    with h5py.File(path, "r", locking=False):
        assert list_caches(path.parent) == [path]
        assert tlx.load_features(path.parent).paths == names_of_round(0)
        assert read_index(path).paths == names_of_round(0)
