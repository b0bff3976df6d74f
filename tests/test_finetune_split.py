"""Which images fine-tuning validates on: with --init-head exactly the head run's val images,
whatever changed in the data since, so no image the head was trained on can score; a refusal
naming the difference when that is impossible; and the split recorded in the run."""

from __future__ import annotations

import json

import pytest
from conftest import make_folder_dataset, write_image

LP_FT = [
    "--epochs",
    "1",
    "--unfreeze",
    "0",
    "--lr",
    "1e-12",
    "--head-lr",
    "1e-12",
    "--no-augment",
    "--workers",
    "0",
    "--batch-size",
    "8",
    "--json",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def head_run(cli, tmp_path) -> dict:
    """A linear head fitted on 2 x 20 images; its metrics and the cache's path -> hash."""
    import tlx

    data = make_folder_dataset(tmp_path / "data", per_class=20)
    assert cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    fit = cli("fit-head", "--clf", "linear", "--out", tmp_path / "head", "--quiet")
    assert fit.exit_code == 0, fit.stderr
    metrics = json.loads((tmp_path / "head" / "metrics.json").read_text())
    feats = tlx.load_features(metrics["cache"])
    hash_of = dict(zip(feats.paths, feats.sha256, strict=True))
    return {"data": data, "run": tmp_path / "head", "metrics": metrics, "hash_of": hash_of}


def test_lp_ft_on_changed_data_never_validates_on_a_head_training_image(cli, head_run, tmp_path):
    data, head = head_run["data"], head_run["metrics"]
    head_val = set(head["split"]["val_sha256"])
    head_train = set(head_run["hash_of"].values()) - head_val
    assert len(head_val) == head["n_val"] and len(head_train) == head["n_train"]
    # The data changes after the head was fitted: 10% more images, two training images gone.
    for i in range(4):
        write_image(data / ("ants", "bees")[i % 2] / f"new_{i}.png", seed=500 + i)
    gone = sorted(p for p, h in head_run["hash_of"].items() if h in head_train)[:2]
    for path in gone:
        (data / path).unlink()

    r = cli("finetune", "--init-head", head_run["run"], *LP_FT, "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    ft_val = set(m["split"]["val_sha256"])
    assert ft_val == head_val and not ft_val & head_train
    assert (m["n_val"], m["n_train"]) == (head["n_val"], head["n_train"] - 2 + 4)  # the new images train
    # "epoch 0" scores the fitted head on the very images it was validated on: the same accuracy.
    assert m["init_head_val_accuracy"] == pytest.approx(head["val_accuracy"])


def test_lp_ft_refuses_when_a_head_validation_image_is_gone(cli, head_run, tmp_path):
    val = set(head_run["metrics"]["split"]["val_sha256"])
    victim = next(p for p, h in sorted(head_run["hash_of"].items()) if h in val)
    (head_run["data"] / victim).write_bytes((head_run["data"] / victim).read_bytes() + b"changed")
    r = cli("finetune", "--init-head", head_run["run"], *LP_FT, "--out", tmp_path / "ft")
    assert r.exit_code == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert f"1 of the {len(val)} validation images of the head run" in line and "fit a new head" in line, line
    assert f"first: {victim}" in line, line  # named by its path in the head's cache
    assert not (tmp_path / "ft").exists()


def test_lp_ft_refuses_options_and_runs_that_cannot_keep_the_heads_split(cli, head_run, tmp_path):
    r = cli("finetune", "--init-head", head_run["run"], "--val-fraction", "0.5", *LP_FT, "--out", tmp_path / "ft")
    assert r.exit_code == 2 and "--val-fraction 0.5" in r.stderr and "drop --val-fraction" in r.stderr, r.stderr
    # a head run that does not record its val images (made by an older tlx)
    metrics_path = head_run["run"] / "metrics.json"
    record = json.loads(metrics_path.read_text())
    del record["split"]["val_sha256"]
    metrics_path.write_text(json.dumps(record))
    r = cli("finetune", "--init-head", head_run["run"], *LP_FT, "--out", tmp_path / "ft")
    assert r.exit_code == 2 and "does not record which images" in r.stderr and "tlx fit-head" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_plain_run_records_the_same_split_as_fit_head(cli, head_run, tmp_path):
    r = cli("finetune", head_run["data"], "--backbone", "tiny_cnn", *LP_FT, "--out", tmp_path / "ft")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["split"]["val_sha256"] == head_run["metrics"]["split"]["val_sha256"]
    assert {k: m["split"][k] for k in ("source", "val_fraction", "seed")} == {
        "source": "seeded",
        "val_fraction": 0.2,
        "seed": 0,
    }
