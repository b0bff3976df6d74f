"""The part layout: appends write only new vectors, removals write no vector, compaction, the
stat index (re-runs that open nothing), hash-what-you-decode, precision, old caches, symlink loops."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import backdate, make_folder_dataset, write_image

import tlx
from tlx.errors import CacheError
from tlx.extractor.extract import extract

TINY = dict(backbone="tiny_cnn", workers=0, batch_size=4)


def run(data, cache, **kw):
    return extract(data, cache_dir=cache, **{**TINY, **kw})


def parts_of(cache_file: str) -> dict[str, tuple]:
    folder = Path(cache_file + ".parts")
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.h5")}


def by_path(path) -> dict[str, np.ndarray]:
    f = tlx.load_features(path)
    return dict(zip(f.paths, f.X, strict=True))


@pytest.fixture
def data(tmp_path) -> Path:
    root = make_folder_dataset(tmp_path / "data", per_class=5)
    backdate(root)
    return root


def test_append_writes_one_part_with_the_new_rows_only(data, tmp_path):
    cache = tmp_path / "cache"
    first = run(data, cache)
    before = parts_of(first.path)
    write_image(data / "ants" / "zz_new.png", seed=90)
    write_image(data / "bees" / "aa_new.png", seed=91)
    added = run(data, cache)
    assert (added.n_new, added.n_reused, added.n_images) == (2, 10, 12)
    after = parts_of(added.path)
    assert {k: v for k, v in after.items() if k in before} == before  # old parts untouched
    [new] = set(after) - set(before)
    with h5py.File(Path(added.path + ".parts") / new, "r") as f:
        assert f["features"].shape == (2, 32)  # the k new vectors, nothing else
    fresh = run(data, tmp_path / "fresh")
    a, b = tlx.load_features(added.path), tlx.load_features(fresh.path)
    assert a.paths == b.paths and a.sha256 == b.sha256  # path order, as a fresh run
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


def test_removal_writes_no_vector_and_compaction_merges(data, tmp_path, cli):
    cache = tmp_path / "cache"
    run(data, cache)
    write_image(data / "ants" / "ants_new.png", seed=92)
    grown = run(data, cache)
    parts = parts_of(grown.path)
    (data / "bees" / "bees_1.png").unlink()
    (data / "ants" / "ants_new.png").unlink()
    shrunk = run(data, cache)
    assert (shrunk.n_removed, shrunk.n_new, shrunk.n_images) == (2, 0, 9)
    assert set(parts_of(shrunk.path)) <= set(parts)  # no part written; the emptied one is gone
    expected = by_path(shrunk.path)

    res = cli("cache", "compact", cache, "--json")
    assert res.exit_code == 0, res.stderr
    [info] = res.json()["caches"]
    assert (info["n_images"], info["parts_after"]) == (9, 1)
    assert len(parts_of(shrunk.path)) == 1
    after = by_path(shrunk.path)
    assert list(after) == list(expected)
    for p in expected:
        np.testing.assert_array_equal(after[p], expected[p])
    again = run(data, cache)  # the stat index survived compaction: nothing to do
    assert (again.n_opened, again.written, again.n_reused) == (0, False, 9)


def test_unchanged_rerun_opens_no_image_file(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    run(data, cache)
    opened = []
    real_open = builtins.open

    def spying_open(file, *args, **kwargs):
        if str(file).startswith(str(data)):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    again = run(data, cache)
    assert opened == [] and again.n_opened == 0 and not again.written and again.n_reused == 10


def test_a_changed_stat_rehashes_and_rehash_reads_everything(data, tmp_path):
    cache = tmp_path / "cache"
    run(data, cache)
    os.utime(data / "ants" / "ants_0.png", (time.time() - 30, time.time() - 30))  # touched, same bytes
    touched = run(data, cache)
    assert (touched.n_opened, touched.n_new, touched.n_reused) == (1, 0, 10)
    assert touched.written  # the new stat is recorded ...
    assert run(data, cache).n_opened == 0  # ... so the next run trusts it again
    forced = run(data, cache, rehash=True)
    assert (forced.n_opened, forced.n_new, forced.n_reused) == (10, 0, 10)


def test_the_hash_is_of_the_bytes_that_were_decoded(data, tmp_path, monkeypatch):
    """A file rewritten after the stat and before the read: the vector and the hash both come
    from the one read, so they belong together (before, old bytes' hash + new pixels)."""
    from tlx.cache import incremental

    target = data / "ants" / "ants_2.png"
    real = incremental.stat_files

    def stat_then_modify(paths, *a, **kw):
        stats = real(paths, *a, **kw)
        write_image(target, seed=77)  # changes between discovery/stat and the worker's read
        return stats

    monkeypatch.setattr(incremental, "stat_files", stat_then_modify)
    res = run(data, tmp_path / "cache")
    monkeypatch.setattr(incremental, "stat_files", real)
    feats = tlx.load_features(res.path)
    i = feats.paths.index("ants/ants_2.png")
    assert feats.sha256[i] == hashlib.sha256(target.read_bytes()).hexdigest()
    fresh = by_path(run(data, tmp_path / "fresh").path)
    np.testing.assert_allclose(feats.X[i], fresh["ants/ants_2.png"], atol=1e-5)


def test_precision_is_part_of_the_feature_space(data, tmp_path):
    cache = tmp_path / "cache"
    fp32 = run(data, cache)
    before = parts_of(fp32.path)
    bf16 = run(data, cache, precision="bf16")
    assert bf16.path != fp32.path and bf16.n_new == 10 and parts_of(fp32.path) == before
    a, b = tlx.load_features(fp32.path), tlx.load_features(bf16.path)
    assert (a.space.precision, b.space.precision) == ("fp32", "bf16")
    assert a.space.identity() != b.space.identity() and a.space.key != b.space.key
    assert np.abs(a.X - b.X).max() > 1e-4  # different vectors: they must never share a cache
    assert run(data, cache, precision="bf16").n_reused == 10  # and each finds its own again


def test_predict_computes_in_the_runs_precision(data, tmp_path, monkeypatch):
    from tlx.extractor import engine
    from tlx.heads.runs import load_run
    from tlx.heads.training.fit import fit_head
    from tlx.inference.predict import predict_paths

    res = run(data, tmp_path / "cache", precision="bf16")
    fit = fit_head(res.path, clf="linear", out=tmp_path / "runs" / "r")
    seen = []
    real_init = engine.FeatureRunner.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("precision"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(engine.FeatureRunner, "__init__", spy)
    new = write_image(tmp_path / "new" / "x.png", seed=123)
    preds = predict_paths(load_run(fit.run), [new], workers=0)
    assert seen == ["bf16"] and preds.n_computed == 1


def test_old_single_file_caches_still_load(tmp_path, cli):
    """Format 1 (one HDF5 file, no parts, no precision): read as before, never written to."""
    path = tmp_path / "cache" / "old-tiny_cnn-avg-0123456789.h5"
    path.parent.mkdir()
    X = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    space = {
        "backbone": "tiny_cnn",
        "weights_sha256": "0" * 64,
        "weights_id": "random-init",
        "preprocessing": {
            "input_size": 32,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
        },
        "pooling": "avg",
        "feature_dim": 8,
    }
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=X, maxshape=(None, 8), chunks=True)
        f.create_dataset("labels", data=np.array([0, 0, 1, 1]))
        for name, values in {
            "paths": ["a/1", "a/2", "b/1", "b/2"],
            "split": [""] * 4,
            "content_sha256": ["f" * 64] * 4,
            "classes": ["a", "b"],
        }.items():
            f.create_dataset(name, data=np.array(values, dtype=object), dtype=s)
        f.create_dataset("failed/paths", shape=(0,), dtype=s)
        f.create_dataset("failed/reasons", shape=(0,), dtype=s)
        f.attrs.update({"tlx_format": 1, "feature_space": json.dumps(space), "n_images": 4, "feature_dim": 8})
    feats = tlx.load_features(path)
    np.testing.assert_array_equal(feats.X, X)
    assert feats.space.precision == "fp32"
    from tlx.cache.rows import CacheRows

    np.testing.assert_array_equal(CacheRows(path, [1, 3]).to_array(), X[[1, 3]])
    listed = cli("info", path.parent, "--json")
    assert listed.exit_code == 0 and listed.json()[0]["n_images"] == 4 and listed.json()[0]["format"] == 1


def test_a_missing_part_is_a_clear_error_not_zeros(data, tmp_path, cli):
    res = run(data, tmp_path / "cache")
    for part in Path(res.path + ".parts").glob("*.h5"):
        part.unlink()
    with pytest.raises(CacheError, match=r"part file .* is missing"):
        tlx.load_features(res.path)
    out = cli("info", res.path)
    assert out.exit_code == 2 and "is missing" in out.stderr


def test_a_symlink_loop_is_walked_once(tmp_path):
    from tlx.extractor.discovery import discover

    root = make_folder_dataset(tmp_path / "data", per_class=2)
    (root / "ants" / "again").symlink_to(root / "ants", target_is_directory=True)  # ants/again/again/...
    (root / "bees" / "up").symlink_to(root, target_is_directory=True)  # a link to the data folder itself
    index = discover(root)  # a walk that followed the loops would never return
    ants = [it.relpath for it in index.items if it.label == "ants"]
    assert ants == ["ants/ants_0.png", "ants/ants_1.png"]
