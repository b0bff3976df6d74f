"""Fine-tuning reports the val score of an epoch chosen without the val labels (the last one),
unless --select-on val asks otherwise, and then says the score is optimistic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_folder_dataset

TINY = ["--backbone", "tiny_cnn", "--workers", "0", "--batch-size", "8", "--lr", "0.01", "--head-lr", "0.05"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("ftsel") / "data", per_class=12)


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


def test_the_last_epoch_is_kept_and_reported_by_default(cli, data, tmp_path):
    r = cli("finetune", data, "--epochs", "3", *TINY, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "epoch 3 of 3, the last: chosen without the val labels" in r.stdout
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["selection"] == {"on": "last epoch", "optimistic": False} and m["best_epoch"] == 3
    assert m["val_accuracy"] == pytest.approx(m["history"][-1]["val_accuracy"])
    assert json.loads((tmp_path / "run" / "finetune.json").read_text())["selection"] == m["selection"]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_select_on_val_keeps_the_best_val_epoch_and_says_it_is_optimistic(cli, data, tmp_path):
    r = cli("finetune", data, "--epochs", "3", "--select-on", "val", *TINY, "--out", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert out["selection"] == {"on": "val", "optimistic": True}
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    accs = [h["val_accuracy"] for h in m["history"]]
    assert m["best_epoch"] == 1 + accs.index(max(accs)) and m["selection"]["optimistic"]


def test_early_stopping_chooses_on_val_so_it_needs_select_on_val(cli, data, tmp_path):
    r = cli("finetune", data, "--epochs", "3", "--early-stop", "1", *TINY, "--out", tmp_path / "run")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "--early-stop 1" in r.stderr and "add --select-on val" in r.stderr
    assert not (tmp_path / "run").exists()


def test_an_init_head_is_scored_as_epoch_0_but_not_kept_by_default(cli, data, tmp_path):
    assert cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    assert cli("fit-head", "--clf", "linear", "--out", tmp_path / "head", "--quiet").exit_code == 0
    head_acc = json.loads((tmp_path / "head" / "metrics.json").read_text())["val_accuracy"]
    wreck = ["--unfreeze", "all", "--optimizer", "sgd", "--lr", "0.001", "--head-lr", "0.001", "--warmup-epochs", "0"]
    args = ["--epochs", "1", *wreck, "--no-augment", "--workers", "0", "--batch-size", "8"]
    r = cli("finetune", "--init-head", tmp_path / "head", *args, "--out", tmp_path / "ft", "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["init_head_val_accuracy"] == pytest.approx(head_acc)  # reported beside
    assert m["best_epoch"] == 1 and m["val_accuracy"] == pytest.approx(m["history"][0]["val_accuracy"])
    assert m["selection"] == {"on": "last epoch", "optimistic": False}
