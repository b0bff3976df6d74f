"""Honest model selection: choices made on the training images alone, every split used as its
name says, and copies of a photo across the split or across classes reported."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlx.heads.registry import get_head
from tlx.heads.training.fit import fit_head
from tlx.heads.training.sweep import densify, grouped_folds


def _photo(path: Path, label: int, seed: int) -> None:
    """Two classes that differ in colour, with noise that makes some images hard."""
    rng = np.random.default_rng(seed)
    base = np.array([150, 90, 60] if label == 0 else [60, 90, 150], dtype=np.float64)
    noise = rng.normal(0.0, 20.0 + 50.0 * (seed % 4), size=(40, 48, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


def _dataset(root: Path, sides: dict[str, int], seed0: int = 0) -> Path:
    """``sides``: folder (train, val, test) -> images per class."""
    seed = seed0
    for side, n in sides.items():
        for label, name in enumerate(("ants", "bees")):
            for i in range(n):
                _photo(root / side / name / f"{name}_{side}_{i}.png", label, seed)
                seed += 1
    return root


def _extract(data: Path, cache: Path) -> str:
    from tlx.extractor.extract import extract

    return extract(data, backbone="tiny_cnn", cache_dir=cache, workers=0).path


def _swap(folder: Path) -> None:
    """Swap the labels of a split: ants/ becomes bees/ and bees/ becomes ants/."""
    (folder / "ants").rename(folder / "tmp")
    (folder / "bees").rename(folder / "ants")
    (folder / "tmp").rename(folder / "bees")


@pytest.fixture(scope="module")
def swapped(tmp_path_factory) -> tuple[str, str]:
    """The same photos twice: as they are, and with the val folders' labels swapped."""
    root = tmp_path_factory.mktemp("swap")
    right = _dataset(root / "right", {"train": 10, "val": 6})
    wrong = root / "wrong"
    shutil.copytree(right, wrong)
    _swap(wrong / "val")
    return _extract(right, root / "cache-right"), _extract(wrong, root / "cache-wrong")


# --------------------------------------------------------------------------- the choices


@pytest.mark.parametrize("clf", ["linear", "logreg"])
def test_swapping_the_val_labels_changes_no_choice_the_sweep_makes(swapped, tmp_path, clf):
    right, wrong = (fit_head(c, clf, sweep=True, out=tmp_path / n) for c, n in zip(swapped, "rw", strict=True))
    assert right.metrics["sweep"]["selection"] == "5-fold CV on train"
    assert right.metrics["sweep"]["best"] == wrong.metrics["sweep"]["best"]
    assert right.metrics["sweep"]["scores"] == wrong.metrics["sweep"]["scores"]
    assert right.metrics["cv_accuracy"] == wrong.metrics["cv_accuracy"]
    assert right.val_accuracy == pytest.approx(1.0 - wrong.val_accuracy)  # the val labels did change
    # Choosing on val, the same swap moves the choice: that is what --select-on cv protects from.
    on_val = [fit_head(c, clf, sweep=True, select_on="val", out=tmp_path / f"v{i}") for i, c in enumerate(swapped)]
    assert on_val[0].metrics["sweep"]["scores"] != on_val[1].metrics["sweep"]["scores"]
    assert on_val[0].metrics["selection"] == {"on": "val", "optimistic": True}


def test_several_heads_are_ranked_by_cv_whatever_the_val_labels(swapped, cli, tmp_path):
    orders = []
    for i, cache in enumerate(swapped):
        r = cli("fit-head", "--features", cache, "--clf", "linear,logreg,knn", "--out", tmp_path / str(i), "--json")
        assert r.exit_code == 0, r.stderr
        rows = json.loads(r.stdout.strip().splitlines()[-1])
        assert all(row["cv_accuracy"] is not None and row["val_accuracy"] is not None for row in rows)
        assert all(row["selection"]["on"] == "cv" for row in rows)
        orders.append({row["clf"]: row["cv_accuracy"] for row in rows})
        table = cli("fit-head", "--features", cache, "--clf", "linear,logreg,knn", "--out", tmp_path / f"t{i}")
        lines = table.stdout.splitlines()
        assert lines[0].split()[:5] == ["head", "params", "cv", "acc", "val"] and "ranked by 5-fold CV" in table.stdout
        cv = [float(line.split()[-4]) for line in lines[1:4]]
        assert cv == sorted(cv, reverse=True)
    assert orders[0] == orders[1]


def test_select_on_val_says_its_score_is_optimistic(swapped, cli, tmp_path):
    r = cli("fit-head", "--features", swapped[0], "--clf", "logreg", "--sweep", "--select-on", "val")
    assert r.exit_code == 0, r.stderr
    assert "val, optimistic" in r.stdout and "the val score is optimistic" in r.stdout
    r = cli("fit-head", "--features", swapped[0], "--clf", "linear,knn", "--select-on", "val", "--out", tmp_path / "v")
    assert r.exit_code == 0 and "ranked by val accuracy (--select-on val: the top val score is optimistic)" in r.stdout
    m = json.loads((tmp_path / "v" / "knn" / "metrics.json").read_text())
    assert m["selection"] == {"on": "val", "optimistic": True} and m["cv_accuracy"] is None


def test_a_plain_fit_selects_nothing(swapped, tmp_path):
    result = fit_head(swapped[0], "linear", out=tmp_path / "plain")
    assert result.metrics["selection"] is None and result.metrics["cv_accuracy"] is None


def test_a_sweep_is_refused_when_a_class_has_one_training_image(cli, tmp_path):
    data = _dataset(tmp_path / "data", {"val": 3})
    _photo(data / "train" / "ants" / "a.png", 0, 100)
    for i in range(4):
        _photo(data / "train" / "bees" / f"b{i}.png", 1, 101 + i)
    cache = _extract(data, tmp_path / "cache")
    r = cli("fit-head", "--features", cache, "--clf", "logreg", "--sweep", "--out", tmp_path / "x")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "class 'ants' has 1 distinct training image" in r.stderr and "--select-on val" in r.stderr
    assert not (tmp_path / "x").exists()
    args = ("--clf", "logreg", "--sweep", "--select-on", "val", "--out", tmp_path / "v")
    r = cli("fit-head", "--features", cache, *args)
    assert r.exit_code == 0, r.stderr


def test_folds_keep_copies_of_a_photo_and_its_views_together():
    y = np.repeat([0, 1], 12)
    hashes = [f"h{i // 2}" for i in range(24)]  # every photo twice
    group = np.r_[np.arange(24), np.arange(24)]  # one view per image after the center rows
    ytr = np.r_[y, y]
    folds = grouped_folds(ytr, hashes, group, 0, "--sweep", ["ants", "bees"])
    assert len(folds) == 5
    for fit_rows, score_rows in folds:
        assert np.all(score_rows < 24)  # scored on center rows only
        fitted_images = set(group[fit_rows].tolist())
        assert not fitted_images & set(score_rows.tolist())
        assert not {hashes[i] for i in fitted_images} & {hashes[i] for i in score_rows}


def test_sweep_grids_step_at_most_half_a_decade():
    for name in ("linear", "logreg", "svm", "mlp", "ridge"):
        grid = densify(get_head(name).grid)
        steps = np.abs(np.diff(np.log10(grid)))
        assert steps.max() <= 0.5 + 1e-9 and grid[0] == get_head(name).grid[0]
    assert len(densify([1e-4, 1e4])) == 17 and densify([32, 16, 8, 4, 2, 1]) == [32, 16, 8, 4, 2, 1]
    assert densify([1.0, 1e-1]) == pytest.approx([1.0, 10**-0.5, 0.1]) and math.isclose(densify([3, 10])[1], 5)


# --------------------------------------------------------------------------- every split used


def test_train_and_test_without_val_trains_on_all_of_train_and_reports_test(cli, tmp_path):
    data = _dataset(tmp_path / "data", {"train": 6, "test": 3})
    cache = _extract(data, tmp_path / "cache")
    r = cli("fit-head", "--features", cache, "--clf", "logreg", "--sweep", "--out", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (out["n_train"], out["n_val"], out["n_test"]) == (12, 0, 6)  # train is not re-split
    assert out["val_accuracy"] is None and 0.0 <= out["test_accuracy"] <= 1.0 and out["cv_accuracy"] is not None
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["split"]["source"] == "data" and m["evaluated_on"] == "test"
    assert np.sum(m["confusion_matrix"]) == 6 and m["test"]["accuracy"] == m["test_accuracy"]
    text = cli("fit-head", "--features", cache, "--out", tmp_path / "plain")
    assert text.exit_code == 0 and "test accuracy" in text.stdout and "on 6 test / 12 train images" in text.stdout


def test_train_val_and_test_are_all_reported(cli, tmp_path):
    data = _dataset(tmp_path / "data", {"train": 6, "val": 2, "test": 3})
    cache = _extract(data, tmp_path / "cache")
    result = fit_head(cache, "linear", out=tmp_path / "run")
    m = result.metrics
    assert (m["n_train"], m["n_val"], m["n_test"]) == (12, 4, 6) and m["evaluated_on"] == "val"
    assert np.sum(m["confusion_matrix"]) == 4 and np.sum(m["test"]["confusion_matrix"]) == 6
    from tlx import load_features
    from tlx.heads.runs import load_run

    feats = load_features(cache)
    test = np.array([s == "test" for s in feats.split])
    head = load_run(result.run).head
    assert np.mean(head.predict(feats.X[test]) == feats.y[test]) == pytest.approx(m["test_accuracy"])
    r = cli("fit-head", "--features", cache, "--out", tmp_path / "cli")
    assert "on 4 val / 12 train images; test accuracy" in r.stdout and "on 6 test images" in r.stdout


# --------------------------------------------------------------------------- copies


def test_copies_across_the_split_and_across_classes_are_counted_and_reported(cli, tmp_path):
    data = _dataset(tmp_path / "data", {"train": 5, "val": 3})
    for i in range(3):  # three val photos copied into train, one of them under the other class too
        shutil.copy(data / "val" / "ants" / f"ants_val_{i}.png", data / "train" / "ants" / f"copy_{i}.png")
    shutil.copy(data / "val" / "ants" / "ants_val_0.png", data / "train" / "bees" / "wrong.png")
    shutil.copy(data / "train" / "bees" / "bees_train_0.png", data / "train" / "bees" / "twice.png")  # same side
    r = cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--cache-dir", tmp_path / "cache", "--json")
    assert r.exit_code == 0, r.stderr
    expected = {"train_val": 3, "cross_class": 1}
    assert json.loads(r.stdout.strip().splitlines()[-1])["duplicates"] == expected
    assert "warning: 3 image(s) are both in train and in val/test" in r.stderr
    assert "1 image(s) carry two labels" in r.stderr
    fit = cli("fit-head", "--features", tmp_path / "cache", "--out", tmp_path / "run", "--json")
    assert fit.exit_code == 0 and json.loads(fit.stdout.strip().splitlines()[-1])["duplicates"] == expected
    assert "warning: 3 image(s) are both in train and in val/test" in fit.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["duplicates"] == expected


def test_clean_data_reports_no_copies(swapped, cli, tmp_path):
    r = cli("fit-head", "--features", swapped[0], "--out", tmp_path / "run", "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["duplicates"] == {"train_val": 0, "cross_class": 0}
    assert "warning" not in r.stderr
