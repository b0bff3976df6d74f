"""Non-finite numbers never pass: NaN/inf features are not cached, a diverged fine-tune is not
saved as a finished run, and predict gives no label from NaN probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import h5_files, make_folder_dataset


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


def _one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _nan_weights(path):
    import torch

    from tlx.extractor.registry import get_backbone

    state = get_backbone("tiny_cnn").build().body.state_dict()
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def test_extract_refuses_nan_features_and_commits_nothing(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    weights = _nan_weights(tmp_path / "nan.pth")
    line = _one_line(cli("extract", data, "--backbone", "tiny_cnn", "--weights", weights, "--workers", "0", "--quiet"))
    assert "NaN/inf features for 6 image(s)" in line and f"--weights {weights}" in line, line
    assert h5_files(tmp_path / "cache") == []  # no index: nothing committed
    parts = list((tmp_path / "cache").glob("*.h5.parts/*.h5"))
    assert parts == [], parts


def test_predict_gives_no_label_from_nan_probabilities(cli, tmp_path, monkeypatch):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    assert cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    assert cli("fit-head", "--clf", "linear", "--out", tmp_path / "run", "--quiet").exit_code == 0
    import tlx.inference.head as head

    real = head.full_proba

    def poisoned(run, X):  # the first image's probabilities are NaN (a head with NaN weights)
        p = real(run, X)
        p[0] = np.nan
        return p

    monkeypatch.setattr(head, "full_proba", poisoned)
    out = tmp_path / "preds.csv"
    result = cli("predict", data / "ants", "--run", tmp_path / "run", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert record["n_images"] == 3 and record["n_failed"] == 1, record
    assert "NaN/inf probabilities" in record["failed"][0]["reason"]
    rows = out.read_text().splitlines()
    assert len(rows) == 4 and "nan" not in out.read_text(), rows
    monkeypatch.setattr(head, "full_proba", lambda run, X: np.full((len(X), 2), np.nan))
    line = _one_line(cli("predict", data / "ants", "--run", tmp_path / "run", "--out", tmp_path / "all.csv"))
    assert "NaN/inf probabilities" in line and "nothing was predicted" in line, line
    assert not (tmp_path / "all.csv").exists()


def test_finetune_stops_on_a_diverged_loss_and_saves_no_finished_run(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=6)
    run = tmp_path / "ft"
    args = ("finetune", data, "--backbone", "tiny_cnn", "--epochs", "2", "--workers", "0", "--out", run)
    line = _one_line(cli(*args, "--lr", "1e30", "--head-lr", "1e30", "--quiet"))
    assert "loss became NaN/inf" in line and "lower --lr" in line, line
    assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()
    assert not any(r["status"] == "done" for r in _runs(cli, run.parent))


def _runs(cli, *roots):
    found = []
    for root in roots:
        result = cli("runs", "--dir", root, "--json")
        assert result.exit_code == 0, result.stderr
        found += json.loads(result.stdout)["runs"]
    return found


def test_a_non_finite_validation_loss_stops_the_run():
    import torch

    from tlx.errors import TlxError
    from tlx.finetune.distributed import Dist
    from tlx.finetune.epoch import reduce_eval

    local = {"indices": np.arange(2), "proba": np.full((2, 2), 0.5), "loss_sum": float("inf")}
    with pytest.raises(TlxError, match="validation loss became NaN/inf"):
        reduce_eval(Dist(), local, np.array([0, 1]), torch.device("cpu"))
    local["loss_sum"] = 1.0
    assert reduce_eval(Dist(), local, np.array([0, 1]), torch.device("cpu"))["val_loss"] == 0.5
