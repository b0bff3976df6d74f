"""CacheRows reads exactly the rows it names, block by block, float16 widened to float32."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tlx.cache.rows import CacheRows


@pytest.fixture
def matrix_file(tmp_path):
    X = np.random.default_rng(0).normal(size=(5000, 12)).astype(np.float32)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=X, chunks=(256, 12))
        f.create_dataset("half", data=X.astype(np.float16), chunks=(256, 12))
    return path, X


@pytest.mark.parametrize("pick", ["all", "dense", "sparse", "empty"])
def test_rows_blocks_and_array_equal_numpy_indexing(matrix_file, pick):
    path, X = matrix_file
    rng = np.random.default_rng(1)
    rows = {
        "all": None,
        "dense": np.arange(100, 3100),
        "sparse": rng.choice(5000, 300, replace=False),
        "empty": np.zeros(0, np.int64),
    }[pick]
    view = CacheRows(path, rows)
    expected = X if rows is None else X[np.sort(rows)]
    assert view.shape == expected.shape
    np.testing.assert_array_equal(view.to_array(), expected)
    np.testing.assert_array_equal(
        np.concatenate([b for _, b in view.blocks(block_rows=97)] or [np.zeros((0, 12))]), expected
    )
    np.testing.assert_array_equal(view[5:40], expected[5:40])


def test_float16_rows_come_back_as_float32(matrix_file):
    path, X = matrix_file
    block = CacheRows(path, np.arange(10), dataset="half")[0:10]
    assert block.dtype == np.float32
    np.testing.assert_array_equal(block, X[:10].astype(np.float16).astype(np.float32))


def test_rows_outside_the_matrix_are_refused(matrix_file):
    with pytest.raises(IndexError, match=r"\[0, 5000\)"):
        CacheRows(matrix_file[0], [0, 5000])


@pytest.fixture(scope="module")
def split_cache(tmp_path_factory):
    from conftest import make_folder_dataset

    from tlx.extractor.extract import extract

    root = tmp_path_factory.mktemp("rows")
    make_folder_dataset(root / "data" / "train", classes=("ants", "bees"), per_class=5)
    make_folder_dataset(root / "data" / "val", classes=("ants", "bees"), per_class=3, seed0=50)
    return extract(root / "data", backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path


def test_load_features_split_reads_only_that_splits_rows(split_cache, monkeypatch):
    import tlx

    whole = tlx.load_features(split_cache)
    read: list[int] = []
    original = CacheRows._read

    def spy(ds, rows):
        read.extend(rows.tolist())
        return original(ds, rows)

    monkeypatch.setattr(CacheRows, "_read", staticmethod(spy))
    val = tlx.load_features(split_cache, split="val")
    wanted = [i for i, s in enumerate(whole.split) if s == "val"]
    assert sorted(read) == wanted and set(val.split) == {"val"}
    np.testing.assert_array_equal(val.X, whole.X[wanted])
    assert val.paths == [whole.paths[i] for i in wanted]


def test_lazy_features_stream_in_chunks(split_cache):
    import tlx

    whole = tlx.load_features(split_cache)
    lazy = tlx.load_features(split_cache, lazy=True)
    assert lazy.lazy and lazy.X.shape == whole.X.shape
    chunks = list(lazy.iter_chunks(rows=3))
    assert [len(y) for _, y in chunks] == [3, 3, 3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([X for X, _ in chunks]), whole.X)
    np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]), whole.y)
    train = lazy.subset(np.array([s == "train" for s in lazy.split]))
    np.testing.assert_array_equal(train.X.to_array(), whole.X[[s == "train" for s in whole.split]])
