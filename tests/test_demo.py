"""``tlx demo``: the embedded digits dataset, and the whole job end to end (on ``tiny_cnn`` to
stay fast; one test uses the real default backbone on a few images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def test_write_digits_gives_a_balanced_split_of_real_digit_images(tmp_path):
    from sklearn.datasets import load_digits

    from tlx.extractor.demo_data import write_digits
    from tlx.extractor.discovery import discover

    demo = write_digits(tmp_path / "digits", per_class_train=3, per_class_val=2, size=64)
    assert (demo.n_train, demo.n_val, demo.n_images) == (30, 20, 50)
    index = discover(demo.root)
    assert index.layout == "split" and index.classes == [str(d) for d in range(10)]
    assert sorted({it.split for it in index.items}) == ["train", "val"]
    # Each file is its source scan: dark ink on white, and the darkest pixels where the scan is inkiest.
    first = index.items[0]
    img = Image.open(index.abspath(first))
    assert img.mode == "RGB" and img.size == (64, 64)
    scan = load_digits().images[int(Path(first.relpath).stem.split("-")[1])]
    gray = np.asarray(img.convert("L").resize((10, 10), Image.Resampling.BOX), dtype=float)[1:-1, 1:-1]
    assert np.corrcoef(gray.ravel(), scan.ravel())[0, 1] < -0.8
    # Re-writing leaves the files byte-identical (so a re-run reuses the cache).
    before = {p: p.read_bytes() for p in demo.root.rglob("*.png")}
    write_digits(tmp_path / "digits", per_class_train=3, per_class_val=2, size=64)
    assert {p: p.read_bytes() for p in demo.root.rglob("*.png")} == before


def test_demo_runs_the_whole_job_and_a_rerun_reuses_the_cache(cli, tmp_path):
    out = tmp_path / "demo"
    args = ("demo", "--out", out, "--backbone", "tiny_cnn", "--per-class", "4", "--workers", "0", "--json")
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    result = r.json()
    assert (result["n_images"], result["n_train"], result["n_val"], result["n_extracted"]) == (60, 40, 20, 60)
    assert 0.0 <= result["val_accuracy"] <= 1.0
    run, cache = Path(result["run"]), Path(result["cache"])
    assert run.parent == out / "runs" and cache.parent == out / "cache" and cache.is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["kind"] == "head" and metrics["clf"] == "linear" and metrics["val_accuracy"] == result["val_accuracy"]
    )
    assert metrics["split"]["source"] == "data"

    again = cli(*args[:-1])  # without --json: a readable summary on stdout
    assert again.exit_code == 0, again.stderr
    assert "for 0 new images" in again.stdout and "validation accuracy" in again.stdout and str(cache) in again.stdout
    assert len(list((out / "runs").iterdir())) == 2  # a new run folder each time


@pytest.mark.real_weights
def test_demo_with_the_real_default_backbone_learns_the_digits(cli, tmp_path, offline):
    r = cli("demo", "--out", tmp_path / "demo", "--per-class", "6", "--workers", "0", "--quiet", "--json")
    assert r.exit_code == 0, r.stderr
    result = r.json()
    assert result["backbone"] == "efficientnet_lite0" and result["n_images"] == 90
    # 10 classes from 6 examples each (0.63 measured; chance is 0.1; the full demo reaches 0.97)
    assert result["val_accuracy"] >= 0.4
