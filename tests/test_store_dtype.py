"""--store-dtype float16: half the bytes, float32 vectors rounded to half, a cache of its own."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import make_folder_dataset

import tlx
from tlx.extractor.extract import extract


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("f16")
    data = make_folder_dataset(root / "data", classes=("ants", "bees"), per_class=6)
    full = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0)
    half = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0, store_dtype="float16")
    return root, data, full, half


def _part_bytes(cache: str) -> int:
    parts = list((tlx.load_features(cache).path.parent).glob(tlx.load_features(cache).path.name + ".parts/*.h5"))
    total = 0
    for part in parts:
        with h5py.File(part, "r") as f:
            ds = f["features"]
            total += ds.id.get_storage_size() - 4 * ds.id.get_num_chunks()  # less each chunk's fletcher32 sum
    return total


def test_float16_cache_is_another_file_with_half_the_feature_bytes(both):
    _, _, full, half = both
    assert full.path != half.path
    assert _part_bytes(half.path) * 2 == _part_bytes(full.path)
    a, b = tlx.load_features(full.path), tlx.load_features(half.path)
    assert b.X.dtype == np.float32 and b.space.store_dtype == "float16" and a.space.store_dtype == "float32"
    np.testing.assert_array_equal(b.X, a.X.astype(np.float16).astype(np.float32))
    assert a.space.key != b.space.key


def test_a_head_on_a_float16_cache_predicts_its_val_images_as_fit_head_scored(both, tmp_path):
    from tlx.heads.runs import load_run
    from tlx.heads.training.fit import fit_head
    from tlx.inference.predict import predict_paths

    _, data, _, half = both
    fit = fit_head(half.path, "linear", out=tmp_path / "run")
    run = load_run(fit.run)
    feats = tlx.load_features(half.path)
    val = set(fit.metrics["split"]["val_sha256"])
    paths = [data / p for p, h in zip(feats.paths, feats.sha256, strict=True) if h in val]
    fresh = predict_paths(run, paths, workers=0, reuse_cache=False)  # computed again, then rounded to half
    cached = predict_paths(run, paths, workers=0)
    np.testing.assert_allclose(fresh.proba, cached.proba, atol=1e-6)


def test_store_dtype_is_checked(both, cli):
    _, data, _, _ = both
    r = cli("extract", str(data), "--backbone", "tiny_cnn", "--store-dtype", "int8")
    assert r.exit_code == 2
