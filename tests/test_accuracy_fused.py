"""Fused feature spaces: ``fit-head --features A --features B`` on caches of the same images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import make_folder_dataset, write_image
from test_cli_extract import FAST, assert_user_error

from tlx.cache.features import load_features
from tlx.heads.training.fusion import load_fused


def _two_caches(cli, data, cache):
    a = cli("extract", data, *FAST, "--cache-dir", cache, "--json").json()["path"]
    b = cli("extract", data, *FAST, "--pool", "max", "--stages", "1", "--cache-dir", cache, "--json").json()["path"]
    return a, b


def _split_data(tmp_path):
    root = tmp_path / "data"
    make_folder_dataset(root / "train", per_class=5)
    make_folder_dataset(root / "val", per_class=3, seed0=50)
    return root


def test_rows_are_matched_by_content_not_by_order(cli, tmp_path):
    data = _split_data(tmp_path)
    a, _ = _two_caches(cli, data, tmp_path / "c1")
    # the same images under other names, in another order, in a cache of another space
    other = tmp_path / "renamed"
    for p in sorted(data.rglob("*.png")):
        target = other / p.relative_to(data).parent / ("z" + p.stem[::-1] + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    b = cli("extract", other, *FAST, "--pool", "max", "--cache-dir", tmp_path / "c2", "--json").json()["path"]
    fused, fusion = load_fused([a, b])
    A, B = load_features(a), load_features(b)
    row_b = {h: i for i, h in enumerate(B.sha256)}
    assert len(fused) == len(A) and fusion.missing == []
    for i, h in enumerate(fused.sha256):
        np.testing.assert_array_equal(fused.X[i, :32], A.X[A.sha256.index(h)])
        np.testing.assert_array_equal(fused.X[i, 32:], B.X[row_b[h]])
    assert [b["width"] for b in fusion.blocks] == [32, 32]


def test_fit_on_fused_caches_standardizes_each_block_and_records_the_space(cli, tmp_path):
    data = _split_data(tmp_path)
    a, b = _two_caches(cli, data, tmp_path / "cache")
    res = cli("fit-head", "--features", a, "--features", b, "--clf", "knn", "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.stderr
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    blocks = rec["fused"]["blocks"]
    assert [bl["cache"] for bl in blocks] == [str(tmp_path / "cache" / p) for p in (a, b)] or len(blocks) == 2
    assert [bl["feature_space"]["pooling"] for bl in blocks] == ["avg", "max"]
    assert blocks[1]["feature_space"]["stages"] == 1 and blocks[1]["width"] == 48
    assert rec["n_train"] == 10 and rec["n_val"] == 6
    from safetensors.numpy import load_file

    stats = load_file(str(tmp_path / "run" / "fusion.safetensors"))
    A, B = load_features(a, split="train"), load_features(b, split="train")
    np.testing.assert_allclose(stats["mean"][:32], A.X.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["mean"][32:], B.X.mean(0), rtol=1e-4, atol=1e-6)
    # predict: cached rows reproduce the val accuracy; a new image goes through both backbones
    new = write_image(tmp_path / "new" / "n.png", seed=123)
    out = cli("predict", data / "val", new, "--run", tmp_path / "run", "--json", "--workers", "0", "-q")
    assert out.exit_code == 0, out.stderr
    got = out.json()
    assert got["n_reused"] == 6 and got["n_computed"] == 1
    exp = cli("export", "--run", tmp_path / "run", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert_user_error(exp, "fused features", "tlx predict")


def test_images_missing_from_one_cache_are_reported(cli, tmp_path):
    data = _split_data(tmp_path)
    a = cli("extract", data, *FAST, "--cache-dir", tmp_path / "c", "--json").json()["path"]
    extra = write_image(data / "train" / "ants" / "late.png", seed=77)
    b = cli("extract", data, *FAST, "--pool", "max", "--cache-dir", tmp_path / "c", "--json").json()["path"]
    res = cli("fit-head", "--features", a, "--features", b, "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.stderr
    assert "1 image(s) are not in" in res.stderr and "train/ants/late.png" in res.stderr
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["fused"]["missing"] == [{"cache": str(a), "n": 1, "paths": ["train/ants/late.png"]}]
    assert rec["n_train"] == 10  # the image only one cache holds is out, and said so
    assert extra.exists()


def test_fusing_caches_of_other_images_or_labels_is_refused(cli, tmp_path):
    one, two = _split_data(tmp_path / "one"), tmp_path / "two"
    make_folder_dataset(two / "train", per_class=3, seed0=200)
    make_folder_dataset(two / "val", per_class=2, seed0=300)
    a = cli("extract", one, *FAST, "--cache-dir", tmp_path / "c", "--json").json()["path"]
    b = cli("extract", two, *FAST, "--pool", "max", "--cache-dir", tmp_path / "c", "--json").json()["path"]
    res = cli("fit-head", "--features", a, "--features", b)
    assert res.exit_code == 2 and "no image in common" in res.stderr.strip().splitlines()[-1]
    assert "16 image(s) are not in" in res.stderr  # each cache's missing images were named first
    assert_user_error(cli("fit-head", "--features", a, "--features", a), "same cache twice")
    swapped = tmp_path / "swapped"
    shutil.copytree(one / "train" / "ants", swapped / "train" / "bees")
    shutil.copytree(one / "train" / "bees", swapped / "train" / "ants")
    shutil.copytree(one / "val", swapped / "val")
    c = cli("extract", swapped, *FAST, "--pool", "max", "--cache-dir", tmp_path / "c", "--json").json()["path"]
    assert_user_error(cli("fit-head", "--features", a, "--features", c), "is class", "same labelled data")


def test_predict_tta_averages_the_center_view_and_its_mirror(cli, tmp_path):
    from PIL import Image

    data = _split_data(tmp_path)
    a, b = _two_caches(cli, data, tmp_path / "cache")
    run = tmp_path / "run"
    assert cli("fit-head", "--features", a, "--out", run, "-q").exit_code == 0
    # mirrored copies of the val images: their center view is the originals' mirror view
    mirrored = tmp_path / "mirrored"
    for p in sorted((data / "val").rglob("*.png")):
        target = mirrored / p.relative_to(data / "val")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)

    from tlx.heads.runs import load_run
    from tlx.inference.predict import predict_paths

    def proba(folder, tta=False):
        preds = predict_paths(load_run(run), [folder], workers=0, device="cpu", tta=tta)
        return {Path(p).name: row for p, row in zip(preds.paths, preds.proba, strict=True)}

    plain, flipped, tta = proba(data / "val"), proba(mirrored), proba(data / "val", tta=True)
    for name, p in plain.items():
        np.testing.assert_allclose(tta[name], (p + flipped[name]) / 2, atol=1e-5)
    assert any(not np.allclose(plain[n], tta[n]) for n in plain)  # the mirror changed something
    for fused_run in [tmp_path / "fused"]:
        assert cli("fit-head", "--features", a, "--features", b, "--out", fused_run, "-q").exit_code == 0
        out = cli("predict", data / "val", "--run", fused_run, "--tta", "--workers", "0", "-q", "--json")
        assert out.exit_code == 0, out.stderr
