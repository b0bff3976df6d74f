"""Outputs never destroy inputs: every --out refuses an image, a run's file, a feature cache,
and a run folder inside another run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import h5_files, make_folder_dataset, write_image


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def fitted(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    assert cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    assert cli("fit-head", "--clf", "linear", "--out", tmp_path / "run", "--quiet").exit_code == 0
    return data, tmp_path / "run"


def _refused(result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    return lines[0]


def test_predict_out_never_overwrites_a_photo(cli, fitted):
    data, run = fitted
    photo = data / "ants" / "ants_0.png"
    before = photo.read_bytes()
    _refused(cli("predict", data / "bees", "--run", run, "--out", photo), "is an image")
    assert photo.read_bytes() == before


def test_predict_out_knows_a_photo_by_its_bytes(cli, fitted, tmp_path):
    data, run = fitted
    disguised = write_image(tmp_path / "holiday.csv", seed=9, fmt="PNG")
    before = disguised.read_bytes()
    _refused(cli("predict", data / "bees", "--run", run, "--out", disguised), "is an image")
    assert disguised.read_bytes() == before


def test_predict_out_never_overwrites_a_run_file_or_a_cache(cli, fitted, tmp_path):
    data, run = fitted
    for victim in (run / "metrics.json", run / "head.json"):
        before = victim.read_bytes()
        _refused(cli("predict", data / "bees", "--run", run, "--out", victim), "is a file of the run")
        assert victim.read_bytes() == before
    cache = h5_files(tmp_path / "cache")[0]
    before = cache.read_bytes()
    _refused(cli("predict", data / "bees", "--run", run, "--out", cache), "feature cache")
    assert cache.read_bytes() == before
    part = next(cache.with_name(cache.name + ".parts").iterdir())
    _refused(cli("predict", data / "bees", "--run", run, "--out", part), "feature cache")


def test_predict_out_replaces_its_own_csv_but_no_other_file(cli, fitted, tmp_path):
    data, run = fitted
    out = tmp_path / "preds.csv"
    assert cli("predict", data / "bees", "--run", run, "--out", out, "--quiet").exit_code == 0
    assert cli("predict", data / "ants", "--run", run, "--out", out, "--quiet").exit_code == 0
    assert "ants_0.png" in out.read_text()
    inside = run / "preds.csv"  # a new file in a run is no run file; tlx's own CSV may be replaced there too
    assert cli("predict", data / "bees", "--run", run, "--out", inside, "--quiet").exit_code == 0
    assert cli("predict", data / "ants", "--run", run, "--out", inside, "--quiet").exit_code == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    _refused(cli("predict", data / "bees", "--run", run, "--out", notes), "not a file this command wrote")
    assert notes.read_text() == "my notes\n"


def test_export_out_never_overwrites_a_photo_or_a_run_file(cli, fitted, tmp_path):
    data, run = fitted
    photo = data / "ants" / "ants_1.png"
    before = photo.read_bytes()
    _refused(cli("export", "--run", run, "--out", photo), "is an image")
    assert photo.read_bytes() == before
    _refused(cli("export", "--run", run, "--out", run / "head.safetensors"), "is a file of the run")
    side = tmp_path / "model.onnx.json"  # the sidecar's name holds someone's file
    side.write_text("{}")
    _refused(cli("export", "--run", run, "--out", tmp_path / "model.onnx"), "sidecar")


def test_fit_head_out_never_nests_a_run_inside_a_run(cli, fitted, tmp_path):
    _, run = fitted
    _refused(cli("fit-head", "--clf", "linear", "--out", run / "inner", "--quiet"), "inside the run")
    _refused(cli("fit-head", "--clf", "linear,knn", "--out", run, "--quiet"), "the run")
    assert not (run / "inner").exists() and not (run / "linear").exists()
    cache = h5_files(tmp_path / "cache")[0]
    parts = cache.with_name(cache.name + ".parts")
    _refused(cli("fit-head", "--clf", "linear", "--out", parts / "run", "--quiet"), "feature cache")


def test_finetune_out_refuses_a_folder_inside_a_run(cli, fitted):
    data, run = fitted
    _refused(
        cli("finetune", data, "--backbone", "tiny_cnn", "--epochs", "1", "--workers", "0", "--out", run / "ft"),
        "inside the run",
    )
    assert not (run / "ft").exists()
    assert json.loads((run / "metrics.json").read_text())["kind"] == "head"


def test_runs_lists_damaged_runs_instead_of_hiding_them(cli, fitted, tmp_path):
    _, run = fitted
    runs = tmp_path / "several"
    runs.mkdir()
    good, broken, headless = runs / "good", runs / "broken", runs / "headless"
    import shutil

    shutil.copytree(run, good)
    shutil.copytree(run, broken)
    (broken / "metrics.json").write_text('{"kind": "head", "val_acc')  # cut short
    shutil.copytree(run, headless)
    (headless / "metrics.json").unlink()
    (runs / "notes").mkdir()  # no mark of a run: not a run
    listed = {Path(r["run"]).name: r for r in json.loads(cli("runs", "--dir", runs, "--json").stdout)["runs"]}
    assert set(listed) == {"good", "broken", "headless"}, listed
    assert listed["good"]["status"] == "done"
    assert listed["broken"]["status"] == "damaged" and "not readable JSON" in listed["broken"]["problem"]
    assert listed["headless"]["status"] == "damaged" and "no metrics.json" in listed["headless"]["problem"]
    table = cli("runs", "--dir", runs)
    assert table.exit_code == 0
    assert "damaged" in next(line for line in table.stdout.splitlines() if "broken" in line)
    assert "warning: 2 damaged run(s)" in table.stderr and str(broken) in table.stderr


def test_demo_out_is_never_inside_a_run(cli, fitted):
    _, run = fitted
    _refused(cli("demo", "--out", run / "demo", "--quiet"), "inside the run")
    assert not (run / "demo").exists()
