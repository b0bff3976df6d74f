"""``tlx predict``: cache reuse by content hash, predict-equals-fit accuracy, skipped images,
fine-tuning runs, the CSV and the CLI's exit codes. All on the 32 px ``tiny_cnn`` backbone."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_dataset, write_image

CLASSES = ("ants", "bees", "wasps")


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """DATA/{train,val}/<class>/: 3 classes x (8 train + 5 val), extracted with tiny_cnn, linear head."""
    from tlx.extractor.extract import extract
    from tlx.heads.training.fit import fit_head

    root = tmp_path_factory.mktemp("predict")
    data = root / "data"
    make_folder_dataset(data / "train", CLASSES, per_class=8, seed0=0)
    make_folder_dataset(data / "val", CLASSES, per_class=5, seed0=500)
    cache = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path
    fitted = fit_head(cache, clf="linear", out=root / "run")
    return {"root": root, "data": data, "cache": Path(cache), "run": fitted.run, "fit": fitted}


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """DATA/<class>/ without a split of its own: the head is validated on a seeded split."""
    from tlx.extractor.extract import extract
    from tlx.heads.training.fit import fit_head

    root = tmp_path_factory.mktemp("seeded")
    data = make_folder_dataset(root / "data", CLASSES, per_class=10, seed0=40)
    cache = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path
    fitted = fit_head(cache, clf="logreg", val_fraction=0.3, seed=3, out=root / "run")
    return {"root": root, "data": data, "cache": Path(cache), "run": fitted.run, "fit": fitted}


def _load(run_dir):
    from tlx.heads.runs import load_run

    return load_run(run_dir)


def _predict(run_dir, inputs, **kw):
    from tlx.inference.images import collect_images
    from tlx.inference.predict import predict_paths

    return predict_paths(_load(run_dir), collect_images(inputs), workers=0, **kw)


# --------------------------------------------------------------------------- predict = fit


def test_predicting_the_val_folder_gives_exactly_the_fit_accuracy(split_run):
    preds = _predict(split_run["run"], [split_run["data"] / "val"])
    assert len(preds.paths) == 5 * len(CLASSES) and not preds.failed
    assert preds.n_reused == len(preds.paths) and preds.n_computed == 0  # every image is in the cache
    truth = [Path(p).parent.name for p in preds.paths]
    accuracy = float(np.mean([t == label for t, label in zip(truth, preds.labels, strict=False)]))
    assert accuracy == split_run["fit"].val_accuracy
    assert preds.folder_accuracy() == accuracy
    assert np.allclose(preds.proba.sum(axis=1), 1.0)


def test_predicting_the_seeded_validation_images_gives_exactly_the_fit_accuracy(seeded_run):
    from tlx import load_features
    from tlx.heads.training.split import split_indices

    run = _load(seeded_run["run"])
    feats = load_features(seeded_run["cache"])
    s = run.info["split"]
    assert s["source"] == "seeded"
    _, val, _ = split_indices(feats.paths, feats.y, feats.split, s["val_fraction"], s["seed"], hashes=feats.sha256)
    files = [seeded_run["data"] / feats.paths[i] for i in val]
    preds = _predict(seeded_run["run"], files)
    assert preds.paths == [str(f) for f in files]  # input order is kept
    predicted = [run.classes.index(label) for label in preds.labels]
    assert float(np.mean(np.array(predicted) == feats.y[val])) == run.info["val_accuracy"]


def _every_head():
    from tlx.heads import list_heads

    return list(list_heads())


@pytest.mark.parametrize("clf", _every_head())
def test_every_head_predicts_its_validation_images_with_the_fit_accuracy(split_run, tmp_path, clf):
    from tlx.heads.training.fit import fit_head

    fitted = fit_head(split_run["cache"], clf=clf, out=tmp_path / clf)
    preds = _predict(fitted.run, [split_run["data"] / "val"])
    assert preds.n_computed == 0
    assert preds.folder_accuracy() == fitted.val_accuracy
    assert np.allclose(preds.proba.sum(axis=1), 1.0)


def test_cache_reuse_is_by_content_and_equals_recomputing(split_run, tmp_path):
    # Copies under other names are found by their bytes; an edited image is computed.
    new = tmp_path / "incoming"
    new.mkdir()
    for i, src in enumerate(sorted((split_run["data"] / "val" / "bees").glob("*.png"))[:3]):
        shutil.copy(src, new / f"copy{i}.png")
    write_image(new / "fresh.png", seed=9999)
    reused = _predict(split_run["run"], [new])
    assert (reused.n_reused, reused.n_computed) == (3, 1)
    recomputed = _predict(split_run["run"], [new], reuse_cache=False)
    assert (recomputed.n_reused, recomputed.n_computed) == (0, 4)
    assert reused.paths == recomputed.paths
    np.testing.assert_allclose(reused.proba, recomputed.proba, atol=1e-5)


def test_without_its_cache_the_run_computes_every_image_with_the_same_result(split_run, tmp_path):
    from tlx.inference.images import collect_images
    from tlx.inference.predict import predict_paths

    run = _load(split_run["run"])
    files = collect_images([split_run["data"] / "val" / "ants"])
    with_cache = predict_paths(run, files, workers=0)
    run.info = {**run.info, "cache": str(tmp_path / "moved-away.h5")}
    messages = []

    class Collect:
        def start(self, *a): ...
        def advance(self, n): ...
        def stop(self): ...
        def message(self, text):
            messages.append(text)

    without = predict_paths(run, files, workers=0, reporter=Collect())
    assert without.n_reused == 0 and without.n_computed == len(files)
    assert any("moved-away.h5" in m for m in messages)
    np.testing.assert_allclose(with_cache.proba, without.proba, atol=1e-5)


def test_unreadable_images_are_reported_and_skipped(split_run, tmp_path):
    folder = tmp_path / "mixed"
    write_image(folder / "good.png", seed=1)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    (folder / ".hidden.png").write_bytes(b"")  # hidden: ignored
    preds = _predict(split_run["run"], [folder])
    assert [Path(p).name for p in preds.paths] == ["good.png"]
    assert sorted(Path(f["path"]).name for f in preds.failed) == ["empty.png", "text.jpg"]
    assert all(f["reason"] for f in preds.failed)


def test_rows_have_label_score_probabilities_and_top_k(split_run):
    preds = _predict(split_run["run"], [split_run["data"] / "val" / "wasps"])
    rows = preds.rows(top_k=3)
    for row, p in zip(rows, preds.proba, strict=False):
        assert row["label"] == CLASSES[int(np.argmax(p))] and row["score"] == pytest.approx(p.max())
        assert [row[f"p_{c}"] for c in CLASSES] == pytest.approx(p.tolist())
        assert row["score"] >= row["top2_score"] >= row["top3_score"]
        assert len({row["label"], row["top2"], row["top3"]}) == 3


# --------------------------------------------------------------------------- fine-tuning runs


def test_a_finetuning_run_predicts_with_its_own_network(tmp_path):
    import torch

    from tlx.extractor.preprocess import preprocess_image
    from tlx.finetune.model import load_finetuned
    from tlx.finetune.train import finetune

    data = make_folder_dataset(tmp_path / "data", ("a", "b"), per_class=6)
    finetune(data, backbone="tiny_cnn", epochs=1, batch_size=4, workers=0, device="cpu", out=tmp_path / "ft")
    preds = _predict(tmp_path / "ft", [data])
    assert preds.n_computed == 12 and preds.n_reused == 0 and not preds.failed
    module, pre = load_finetuned(tmp_path / "ft")
    with torch.no_grad():
        want = module(torch.stack([preprocess_image(p, pre) for p in preds.paths])).numpy()
    np.testing.assert_allclose(preds.proba, want, atol=1e-5)


# --------------------------------------------------------------------------- the command


def test_cli_writes_the_csv_and_one_json_line(cli, split_run, tmp_path):
    out = tmp_path / "preds.csv"
    r = cli(
        "predict",
        split_run["data"] / "val",
        "--run",
        split_run["run"],
        "--out",
        out,
        "--top-k",
        "2",
        "--workers",
        "0",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    result = r.json()
    assert result["n_images"] == 15 and result["n_reused"] == 15 and result["n_failed"] == 0
    assert result["folder_accuracy"] == split_run["fit"].val_accuracy
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "score", "p_ants", "p_bees", "p_wasps", "top2", "top2_score"]
    assert len(rows) == 15 and all(r["label"] in CLASSES for r in rows)


def test_cli_without_out_prints_the_csv_on_stdout(cli, split_run):
    r = cli("predict", split_run["data"] / "val" / "ants", "--run", split_run["run"], "--workers", "0", "--quiet")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 5 and set(rows[0]) == {"path", "label", "score", "p_ants", "p_bees", "p_wasps"}
    j = cli("predict", split_run["data"] / "val" / "ants", "--run", split_run["run"], "--workers", "0", "--json")
    assert len(j.json()["predictions"]) == 5 and json.loads(j.stdout.strip().splitlines()[-1])


def test_cli_skipped_images_are_a_warning_not_an_error(cli, split_run, tmp_path):
    write_image(tmp_path / "in" / "ok.png", seed=3)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli("predict", tmp_path / "in", "--run", split_run["run"], "--workers", "0", "--out", tmp_path / "p.csv")
    assert r.exit_code == 0, r.stderr
    assert "broken.png" in r.stderr and "1 image(s) skipped" in r.stdout


@pytest.mark.parametrize("case", ["not-a-run", "missing-image", "no-images", "top-k-0"])
def test_cli_bad_input_exits_2_with_one_line(cli, split_run, tmp_path, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {
        "not-a-run": [split_run["data"] / "val", "--run", empty],
        "missing-image": [tmp_path / "nope.png", "--run", split_run["run"]],
        "no-images": [empty, "--run", split_run["run"]],
        "top-k-0": [split_run["data"] / "val", "--run", split_run["run"], "--top-k", "0"],
    }[case]
    r = cli("predict", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    if case != "top-k-0":  # typer's own usage message is several lines
        assert len(r.stderr.strip().splitlines()) == 1
    expected = {
        "not-a-run": "not a run folder",
        "missing-image": "does not exist",
        "no-images": "no images found",
        "top-k-0": "top-k",
    }[case]
    assert expected in r.stderr


def test_read_rows_returns_the_rows_asked_for_in_order(tmp_path):
    import h5py

    from tlx.inference.cached import read_rows

    X = np.random.default_rng(0).random((1000, 4)).astype(np.float32)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["features"] = X
    rows = [999, 3, 3, 500, 127, 128, 0]
    np.testing.assert_array_equal(read_rows(tmp_path / "c.h5", rows, block=128), X[rows])


# --------------------------------------------------------------------------- issue 9/13 fixes


def test_predict_paths_expands_folders_as_the_cli_does(split_run):
    from tlx.inference.images import collect_images
    from tlx.inference.predict import predict_paths

    folder = split_run["data"] / "val" / "bees"
    preds = predict_paths(_load(split_run["run"]), [folder], workers=0)
    assert not preds.failed and sorted(preds.paths) == sorted(str(p) for p in collect_images([folder]))
    assert len(preds.paths) == 5


def test_failed_images_are_not_counted_as_computed(split_run, tmp_path):
    write_image(tmp_path / "in" / "new.png", seed=777)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    preds = _predict(split_run["run"], [tmp_path / "in"])
    assert len(preds.paths) == 1 and len(preds.failed) == 1
    assert preds.n_computed == 1 and preds.n_reused == 0


def test_cli_exits_non_zero_when_no_image_could_be_read(cli, split_run, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    (tmp_path / "in" / "b.jpg").write_text("not an image")
    out = tmp_path / "p.csv"
    r = cli("predict", tmp_path / "in", "--run", split_run["run"], "--workers", "0", "--out", out, "--quiet")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "none of the 2 image(s) could be read" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_cli_checks_the_device_before_any_work(cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Neither the run nor the image exists: the device is what gets refused, first.
    r = cli("predict", tmp_path / "nope.png", "--run", tmp_path / "no-run", "--device", "cuda")
    assert r.exit_code == 2 and "--device cuda" in r.stderr and "no-run" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_missing_weights_file_is_reported_without_suggesting_weights(tmp_path):
    from safetensors.torch import save_file

    from tlx.errors import TlxError
    from tlx.extractor.extract import extract
    from tlx.extractor.registry import get_backbone
    from tlx.heads.training.fit import fit_head

    net = get_backbone("tiny_cnn").build().body
    weights = tmp_path / "mine.safetensors"
    save_file({k: v.clone().contiguous() for k, v in net.state_dict().items()}, str(weights))
    data = make_folder_dataset(tmp_path / "data", ("a", "b"), per_class=3)
    cache = extract(data, backbone="tiny_cnn", weights=weights, cache_dir=tmp_path / "cache", workers=0).path
    run = fit_head(cache, clf="logreg", out=tmp_path / "run").run
    weights.unlink()
    write_image(tmp_path / "new.png", seed=99)
    with pytest.raises(TlxError) as info:
        _predict(run, [tmp_path / "new.png"])
    assert "mine.safetensors" in str(info.value) and "no longer exists" in str(info.value)
    assert "--weights" not in str(info.value)
    assert _predict(run, [data / "a"]).n_reused == 3  # images in the cache need no weights
