"""Looking at the mistakes: most_confused, top_losses.png (with moved images), runs --show."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import make_folder_dataset, write_image
from PIL import Image

from tlx.common.mistakes import most_confused, plot_top_losses, top_losses


def test_most_confused_lists_off_diagonal_cells_largest_first():
    cm = [[5, 3, 0], [1, 7, 4], [0, 0, 2]]
    assert most_confused(cm, ["a", "b", "c"]) == [
        {"true": "b", "predicted": "c", "count": 4},
        {"true": "a", "predicted": "b", "count": 3},
        {"true": "b", "predicted": "a", "count": 1},
    ]


def test_top_losses_are_the_most_confident_mistakes():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])  # rows 1 and 2 are wrong
    assert top_losses(y, proba).tolist() == [1, 2]


def test_top_losses_png_shows_thumbnails_and_marks_moved_images(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", seed=i, size=(64, 48)) for i in range(3)]
    y = np.array([0, 1, 0])
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    paths[1].unlink()  # moved since the run
    shown = plot_top_losses([str(p) for p in paths], y, proba, ["ants", "bees"], tmp_path / "top.png")
    assert shown == {"shown": 3, "missing": [str(paths[1])]}
    sheet = np.asarray(Image.open(tmp_path / "top.png").convert("RGB")).astype(int)
    thumb = sheet[20:180, 0:160]  # the first tile holds the first image's thumbnail: not blank
    assert thumb.std() > 10


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from tlx.extractor.extract import extract
    from tlx.heads.training.fit import fit_head

    root = tmp_path_factory.mktemp("mistakes")
    data = make_folder_dataset(root / "data", classes=("ants", "bees", "wasps"), per_class=6)
    cache = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path
    return root, data, fit_head(cache, "linear", out=root / "run")


def test_a_head_run_records_most_confused_and_draws_top_losses(fitted, cli):
    _, _, fit = fitted
    metrics = json.loads((fit.run / "metrics.json").read_text())
    assert metrics["most_confused"] == most_confused(metrics["confusion_matrix"], metrics["classes"])
    assert (fit.run / "top_losses.png").is_file()
    r = cli("runs", "--show", fit.run)
    assert (r.exit_code == 0 and "most confused" in r.stdout) or "no confusions" in r.stdout
    assert "top_losses.png" in r.stdout


def test_a_run_whose_images_moved_still_gets_its_picture(fitted, tmp_path):
    from tlx.heads.training.fit import fit_head

    root, data, fit = fitted
    moved = root / "moved"
    shutil.copytree(data, moved)
    cache = fit.metrics["cache"]
    shutil.rmtree(data)  # the cache still names the old folder
    try:
        again = fit_head(cache, "linear", out=tmp_path / "again")
        assert (again.run / "top_losses.png").is_file()
    finally:
        shutil.copytree(moved, data)
