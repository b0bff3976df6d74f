"""Several heads in one fit-head call, and fitting on a cache larger than --max-memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_folder_dataset

from tlx.heads.training.fit import fit_head, fit_heads


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from tlx.extractor.extract import extract

    root = tmp_path_factory.mktemp("many")
    make_folder_dataset(root / "data", classes=("ants", "bees", "wasps"), per_class=8)
    return extract(root / "data", backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path


def test_several_heads_equal_separate_calls(cache, tmp_path):
    together = fit_heads(cache, "linear,logreg,knn", out=tmp_path / "together")
    for result in together:
        alone = fit_head(cache, result.clf, out=tmp_path / f"alone-{result.clf}")
        assert result.run == tmp_path / "together" / result.clf
        assert alone.val_accuracy == result.val_accuracy
        assert alone.metrics["confusion_matrix"] == result.metrics["confusion_matrix"]
        assert alone.metrics["log_loss"] == pytest.approx(result.metrics["log_loss"], rel=1e-6)


def test_all_fits_every_head_and_a_param_goes_to_the_heads_that_have_it(cache, tmp_path):
    from tlx.heads.registry import list_heads

    results = fit_heads(cache, "all", params=["C=0.5"], out=tmp_path / "all")
    assert [r.clf for r in results] == list(list_heads())
    by_name = {r.clf: r for r in results}
    assert by_name["logreg"].params["C"] == 0.5 and by_name["svm"].params["C"] == 0.5
    assert "C" not in by_name["linear"].params


def test_a_param_no_chosen_head_has_is_refused(cli, cache, tmp_path):
    r = cli("fit-head", "--features", cache, "--clf", "linear,knn", "--param", "C=1", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "none of linear, knn has that parameter" in r.stderr
    assert not (tmp_path / "x").exists()


def test_leaderboard_fits_80_columns_and_json_lists_every_head(cli, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    r = cli("fit-head", "--features", cache, "--clf", "linear,logreg,ridge", "--sweep", "--quiet")
    assert r.exit_code == 0, r.stderr
    table = [line for line in r.stdout.splitlines() if not line.startswith("  ")]
    assert table[0].split()[:2] == ["head", "params"] and all(len(line) <= 80 for line in table)
    accuracies = [float(line.split()[-3]) for line in table[1:4]]
    assert accuracies == sorted(accuracies, reverse=True)
    r = cli("fit-head", "--features", cache, "--clf", "linear,knn", "--json", "--quiet")
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["clf"] for row in rows] == ["linear", "knn"] and all("val_accuracy" in row for row in rows)


@pytest.mark.parametrize("clf", ["linear"])
def test_streaming_under_a_tiny_max_memory_gives_the_in_memory_head(cache, tmp_path, clf):
    memory = fit_head(cache, clf, out=tmp_path / "memory")
    streamed = fit_head(cache, clf, out=tmp_path / "streamed", max_memory=1024)
    assert streamed.metrics["streamed"] and not memory.metrics["streamed"]
    assert streamed.val_accuracy == memory.val_accuracy
    from tlx.heads.io import load_head

    a, b = load_head(memory.run), load_head(streamed.run)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-5)


def test_heads_that_need_memory_are_refused_when_the_rows_do_not_fit(cli, cache, tmp_path):
    r = cli("fit-head", "--features", cache, "--clf", "knn", "--max-memory", "1KB", "--out", tmp_path / "k")
    assert r.exit_code == 2 and "knn need the training rows in memory" in r.stderr and "raise --max-memory" in r.stderr


def test_max_memory_must_be_a_size(cli, cache):
    r = cli("fit-head", "--features", cache, "--max-memory", "lots")
    assert r.exit_code == 2 and "expected a size such as 2GB" in r.stderr


def test_info_heads_lists_what_tlx_heads_lists(cli):
    assert cli("info", "--heads").stdout == cli("heads").stdout
    rows = json.loads(cli("info", "--heads", "--json").stdout.strip().splitlines()[-1])
    assert {"linear", "logreg", "ridge", "knn", "svm", "rf", "mlp"} == {row["name"] for row in rows}


def test_a_streamed_sweep_chooses_by_the_same_cross_validation_as_in_memory(cache, tmp_path):
    streamed = fit_head(cache, "linear", sweep=True, out=tmp_path / "s", max_memory=1024)
    memory = fit_head(cache, "linear", sweep=True, out=tmp_path / "m")
    assert streamed.metrics["streamed"] and not memory.metrics["streamed"]
    assert streamed.metrics["sweep"]["selection"] == memory.metrics["sweep"]["selection"] == "5-fold CV on train"
    assert streamed.metrics["sweep"]["best"] == memory.metrics["sweep"]["best"]
    np.testing.assert_allclose(streamed.metrics["sweep"]["scores"], memory.metrics["sweep"]["scores"], atol=1e-9)
