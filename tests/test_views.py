"""Augmented views in the feature cache: ``tlx extract --views K`` and ``fit-head --views N``."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import backdate, make_folder_dataset, write_image

import tlx
from tlx.cache import views as viewstore
from tlx.cache.compact import compact
from tlx.errors import CacheError, TlxError
from tlx.extractor.augment import ViewError, ViewMaker, parse_recipe
from tlx.extractor.extract import extract

TINY = dict(backbone="tiny_cnn", workers=0, batch_size=4)


def run(data, cache, **kw):
    return extract(data, cache_dir=cache, **{**TINY, **kw})


def view_vectors(cache_file) -> dict[tuple[str, int], np.ndarray]:
    """(content sha256, view) -> vector, for every view the index lists."""
    feats = tlx.load_features(cache_file)
    views = feats.views()
    return {(feats.sha256[i], int(v)): x for i, v, x in zip(views.image, views.view, views.X, strict=True)}


@pytest.fixture
def data(tmp_path) -> Path:
    root = make_folder_dataset(tmp_path / "data", per_class=4, size=(64, 56))
    backdate(root)
    return root


@pytest.fixture
def split_data(tmp_path) -> Path:
    root = tmp_path / "split"
    make_folder_dataset(root / "train", per_class=5, size=(64, 56))
    make_folder_dataset(root / "val", per_class=3, size=(64, 56), seed0=50)
    backdate(root)
    return root


# --------------------------------------------------------------------------- recipes


def test_view_pixels_depend_on_content_hash_view_and_recipe_only():
    from PIL import Image

    from tlx.cache.space import Preprocessing
    from tlx.extractor.preprocess import ResizeCrop

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    pre = Preprocessing(32, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    make = ViewMaker(parse_recipe("crop"), ResizeCrop(pre))
    np.random.seed(1)  # the global RNGs play no part
    a = make(img, "ab" * 32, [1, 2, 3])
    np.random.seed(2)
    b = make(img, "ab" * 32, [3, 1])
    assert tuple(a.shape) == (3, 3, 32, 32) and str(a.dtype) == "torch.uint8"
    assert np.array_equal(a[2], b[0]) and np.array_equal(a[0], b[1])
    assert not np.array_equal(a[0], a[1])  # views differ from one another
    assert not np.array_equal(make(img, "cd" * 32, [1])[0], a[0])  # and with the content hash
    other = ViewMaker(parse_recipe("crop:0.9"), ResizeCrop(pre))(img, "ab" * 32, [1])
    assert not np.array_equal(other[0], a[0])  # and with the recipe
    flip = ViewMaker(parse_recipe("flip"), ResizeCrop(pre))(img, "ab" * 32, [1])[0]
    assert np.array_equal(flip.numpy(), ResizeCrop(pre)(img).numpy()[:, :, ::-1])


def test_recipes_have_distinct_recorded_ids():
    ids = {parse_recipe(t).id for t in ("crop", "crop:0.5", "crop:0.7", "flip")}
    assert len(ids) == 3  # crop is crop:0.7
    assert parse_recipe("crop").name == "crop:0.7"


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(views=-1), "--views must be 0"),
        (dict(views=2, view_recipe="flip"), "flip has one view"),
        (dict(views=2, view_recipe="blur"), "not a recipe"),
        (dict(views=2, view_recipe="crop:2"), "crop scale must be"),
    ],
)
def test_bad_view_requests_fail_before_any_work(data, tmp_path, kw, words):
    with pytest.raises(ViewError, match=words) as err:
        run(data, tmp_path / "cache", **kw)
    assert err.value.exit_code == 2
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- extract


def test_views_leave_the_main_features_and_space_unchanged(data, tmp_path):
    plain = run(data, tmp_path / "plain")
    viewed = run(data, tmp_path / "viewed", views=3)
    assert Path(plain.path).name == Path(viewed.path).name  # the same feature space, the same cache name
    a, b = tlx.load_features(plain.path), tlx.load_features(viewed.path)
    assert a.paths == b.paths and a.space == b.space and np.array_equal(a.X, b.X)
    assert (a.n_views, b.n_views) == (0, 3)
    with h5py.File(viewed.path, "r") as f:
        assert f.attrs["views"] == 3 and json.loads(f.attrs["view_recipe"])["name"] == "crop:0.7"
        assert f["views/features"].shape == (8 * 3, a.X.shape[1])
    got = b.views()
    assert got.image.tolist() == [i for i in range(8) for _ in range(3)] and got.view.tolist() == [1, 2, 3] * 8
    assert not np.isnan(got.X).any() and not np.array_equal(got.X[0], b.X[0])
    assert viewed.views == 3 and viewed.n_views_new == 24


def test_more_views_later_computes_only_the_new_ones(data, tmp_path, monkeypatch):
    from tlx.extractor.engine import FeatureRunner

    forwarded = []
    real = FeatureRunner.forward_uint8
    monkeypatch.setattr(FeatureRunner, "forward_uint8", lambda self, x: forwarded.append(len(x)) or real(self, x))
    cache = tmp_path / "cache"
    four = run(data, cache, views=4)
    assert sum(forwarded) == 8 * (1 + 4)
    before = view_vectors(four.path)
    forwarded.clear()
    eight = run(data, cache, views=8)
    assert sum(forwarded) == 8 * 4  # views 5..8 of each image; no center crop again
    assert (eight.n_new, eight.n_reused, eight.n_views_new, eight.n_views_reused) == (0, 8, 32, 32)
    after = view_vectors(eight.path)
    assert len(after) == 64 and all(np.array_equal(after[k], x) for k, x in before.items())
    forwarded.clear()
    again = run(data, cache)  # no --views: the cache keeps its 8 views, nothing to do
    assert sum(forwarded) == 0 and not again.written and again.views == 8
    fewer = run(data, cache, views=2)
    assert fewer.views == 2 and sum(forwarded) == 0 and len(view_vectors(fewer.path)) == 16
    none = run(data, cache, views=0)
    assert none.views == 0 and tlx.load_features(none.path).n_views == 0
    assert not Path(none.path + ".views").exists()  # unused view parts are deleted after the commit


def test_each_image_is_decoded_once_for_its_center_and_views(data, tmp_path, monkeypatch):
    from tlx.extractor import reading

    opened = []
    real = reading.load_image
    monkeypatch.setattr(reading, "load_image", lambda src, **kw: opened.append(1) or real(src, **kw))
    cache = tmp_path / "cache"
    run(data, cache, views=3)
    assert len(opened) == 8
    opened.clear()
    write_image(data / "ants" / "new.png", seed=77, size=(64, 56))
    backdate(data)
    run(data, cache, views=5)  # 8 known images for views 4-5 and one new image: each decoded once
    assert len(opened) == 9
    opened.clear()
    run(data, cache)
    assert opened == []


def test_views_are_the_same_after_an_interrupted_run(data, tmp_path, monkeypatch):
    whole = view_vectors(run(data, tmp_path / "whole", views=3, batch_size=8).path)
    calls = []
    real_add = viewstore.ViewWriter.add

    def add_then_die(self, keys, features):
        calls.append(len(keys))
        real_add(self, keys, features)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after two batches: their views are flushed parts, no index

    monkeypatch.setattr(viewstore.ViewWriter, "add", add_then_die)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        run(data, cache, views=3, batch_size=2, flush_rows=3)
    monkeypatch.setattr(viewstore.ViewWriter, "add", real_add)
    assert list(cache.glob("*.h5")) == []  # nothing committed
    resumed = run(data, cache, views=3, batch_size=3)  # another batch composition, too
    assert resumed.n_views_reused >= 6 and resumed.n_views_new + resumed.n_views_reused == 24
    got = view_vectors(resumed.path)
    assert got.keys() == whole.keys()
    for key, vector in whole.items():
        np.testing.assert_allclose(got[key], vector, atol=1e-5)


def test_a_new_recipe_replaces_the_views_and_compaction_keeps_them(data, tmp_path):
    cache = tmp_path / "cache"
    crop = run(data, cache, views=2)
    flip = run(data, cache, views=1, view_recipe="flip")
    assert (flip.view_recipe, flip.n_views_new, flip.n_views_reused) == ("flip", 8, 0)
    assert len(list(Path(flip.path + ".views").glob("*.h5"))) == 1  # the crop views' part is gone
    kept = run(data, cache)  # the recipe of the cache is kept without --view-recipe
    assert kept.view_recipe == "flip" and not kept.written
    before = view_vectors(crop.path)
    write_image(data / "bees" / "extra.png", seed=99, size=(64, 56))
    run(data, cache)  # a new image gets its view under the cache's recipe
    before = view_vectors(crop.path)
    assert len(before) == 9
    compact(crop.path)
    assert view_vectors(crop.path).keys() == before.keys()
    assert all(np.array_equal(view_vectors(crop.path)[k], v) for k, v in before.items())


def test_a_missing_view_part_is_reported(data, tmp_path):
    res = run(data, tmp_path / "cache", views=2)
    for part in Path(res.path + ".views").glob("*.h5"):
        part.unlink()
    with pytest.raises(CacheError, match=r"view part .* is missing"):
        tlx.load_features(res.path)


# --------------------------------------------------------------------------- fit-head


class FitSpy:
    """Records the training matrix of every fit of the linear head."""

    def __init__(self, monkeypatch):
        from tlx.heads.linear import LinearHead

        self.seen: list[np.ndarray] = []
        real = LinearHead.fit
        spy = self

        def fit(head, X, y, *a, **kw):
            spy.seen.append(np.asarray(X).copy())
            return real(head, X, y, *a, **kw)

        monkeypatch.setattr(LinearHead, "fit", fit)


def _rows_in(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row of ``rows``: is it a row of ``X`` (exactly)?"""
    have = {r.tobytes() for r in np.ascontiguousarray(X, dtype=np.float32)}
    return np.array([r.tobytes() in have for r in np.ascontiguousarray(rows, dtype=np.float32)])


def test_fit_head_trains_on_train_views_and_never_on_val_views(split_data, tmp_path, monkeypatch):
    from tlx.heads.training.fit import fit_head

    res = run(split_data, tmp_path / "cache", views=3)
    spy = FitSpy(monkeypatch)
    result = fit_head(res.path, "linear", ["max_iter=20"], views=None, out=tmp_path / "run")
    feats = tlx.load_features(res.path)
    train, val = feats.subset([s == "train" for s in feats.split]), feats.subset([s == "val" for s in feats.split])
    (X,) = spy.seen
    assert X.shape[0] == 10 * (1 + 3)
    assert _rows_in(X, train.views().X).all() and _rows_in(X, train.X).all()
    assert not _rows_in(X, val.views().X).any() and not _rows_in(X, val.X).any()
    m = json.loads((result.run / "metrics.json").read_text())
    assert (m["n_train"], m["n_val"], m["n_train_views"]) == (10, 6, 30)
    assert m["views"] == {"per_image": 3, "recipe": "crop:0.7", "n_rows": 30}
    plain = fit_head(res.path, "linear", ["max_iter=20"], out=tmp_path / "plain")  # default: no views
    assert plain.metrics["n_train_views"] == 0 and spy.seen[-1].shape[0] == 10


def test_sweep_folds_keep_an_image_with_its_views(tmp_path, monkeypatch):
    from tlx.heads.training.fit import fit_head

    root = make_folder_dataset(tmp_path / "data", per_class=12, size=(64, 56))
    backdate(root)
    res = run(root, tmp_path / "cache", views=2)
    spy = FitSpy(monkeypatch)
    result = fit_head(res.path, "linear", ["max_iter=20"], sweep=True, views=2, out=tmp_path / "run")
    assert result.metrics["sweep"]["selection"].endswith("-fold CV on train")
    feats = tlx.load_features(res.path)
    val_sha = set(result.metrics["split"]["val_sha256"])
    val = feats.subset([h in val_sha for h in feats.sha256])
    all_views = feats.views()
    fold_fits = spy.seen[:-1]  # the last fit is the refit on the whole training part
    assert len(fold_fits) >= 2
    for X in fold_fits + spy.seen[-1:]:
        assert not _rows_in(X, val.views().X).any() and not _rows_in(X, val.X).any()
        centers_in = _rows_in(X, feats.X)
        views_in = _rows_in(X, all_views.X)
        # a view is fitted exactly when its image's center row is: no held-out image's view leaks in
        assert np.array_equal(views_in, centers_in[all_views.image])


def test_fit_head_view_errors(data, tmp_path):
    from tlx.heads.training.fit import fit_head

    plain = run(data, tmp_path / "plain")
    with pytest.raises(TlxError, match="has no augmented views"):
        fit_head(plain.path, "linear", views=2, out=tmp_path / "r1")
    viewed = run(data, tmp_path / "viewed", views=2)
    with pytest.raises(CacheError, match="holds 2 views per image"):
        fit_head(viewed.path, "linear", views=5, out=tmp_path / "r2")
    with pytest.raises(TlxError, match="streamed"):
        fit_head(viewed.path, "linear", views=2, max_memory=64, out=tmp_path / "r3")
    with pytest.raises(TlxError, match="not fused"):
        fit_head([plain.path, viewed.path], "linear", views=2, out=tmp_path / "r4")


def test_cli_views_options(cli, data, tmp_path):
    cache = tmp_path / "cache"
    base = ["extract", str(data), "--backbone", "tiny_cnn", "--workers", "0", "--cache-dir", str(cache)]
    assert cli(*base, "--views", "-1").exit_code == 2
    flip = cli(*base, "--views", "3", "--view-recipe", "flip")
    assert flip.exit_code == 2 and "flip has one view" in flip.stderr
    ok = cli(*base, "--views", "2")
    assert ok.exit_code == 0 and "2 crop:0.7 views per image: 16 new" in ok.stdout
    fit = cli("fit-head", "--features", str(cache), "--views", "all", "--out", str(tmp_path / "run"), "--json")
    assert fit.exit_code == 0, fit.stderr
    out = fit.json()
    assert out["n_train_views"] == 2 * out["n_train"] > 0
    assert f"+ {2 * out['n_train']} view rows (2 crop:0.7 per image)" in fit.stderr
    wrong = cli("fit-head", "--features", str(cache), "--views", "some", "--out", str(tmp_path / "r2"))
    assert wrong.exit_code == 2
