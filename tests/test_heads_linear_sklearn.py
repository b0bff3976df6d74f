"""Linear scikit-learn heads (logreg, ridge, any linear classifier by class name) are saved as
arrays, load back predicting exactly as the fitted pipeline did, and have a linear form that
export and --init-head fold in; other heads stay skops."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, make_folder_dataset, subprocess_env
from sklearn.linear_model import LogisticRegression

from tlx.errors import RunError
from tlx.heads import get_head, softmax
from tlx.heads.io import load_head, save_head

LINEAR = {
    "logreg": "sklearn.linear_model.LogisticRegression",
    "ridge": "sklearn.linear_model.RidgeClassifier",
    "sklearn:LinearDiscriminantAnalysis": "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
    "sklearn:LinearSVC": "sklearn.svm.LinearSVC",
    "sklearn:SGDClassifier": "sklearn.linear_model.SGDClassifier",
}


def problem(n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, 10)) * 1.5
    X = np.concatenate([c + rng.normal(size=(40, 10)) for c in centers]) * 3 + 5  # off-centre: the scaler works
    return X, np.repeat(np.arange(n_classes), 40)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_a_linear_head_is_saved_as_arrays_and_loads_predicting_the_same(name, n_classes, tmp_path):
    X, y = problem(n_classes)
    head = get_head(name).build().fit(X, y)
    save_head(head, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    assert meta["file"] == "head.safetensors" and not (tmp_path / "head.skops").exists()
    assert [s["class"] for s in meta["steps"]] == ["sklearn.preprocessing.StandardScaler", LINEAR[name]]
    assert meta["steps"][-1]["params"] == head.steps[-1][1].get_params(deep=False)

    loaded = load_head(tmp_path)
    assert [type(s).__name__ for _, s in loaded.steps] == [type(s).__name__ for _, s in head.steps]
    assert loaded.name == name and loaded.params_used() == head.params_used()
    X_new = problem(n_classes, seed=1)[0]
    np.testing.assert_array_equal(loaded.predict(X_new), head.predict(X_new))
    np.testing.assert_allclose(loaded.predict_proba(X_new), head.predict_proba(X_new), rtol=1e-12, atol=0)
    np.testing.assert_allclose(loaded.decision_function(X_new), head.decision_function(X_new), rtol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_the_linear_form_gives_the_heads_classes_and_its_probabilities(name, n_classes):
    X, y = problem(n_classes)
    head = get_head(name).build().fit(X, y)
    assert get_head(name).exportable
    W, b, shift, scale = head.linear_form()
    assert W.shape == (n_classes, X.shape[1]) and b.shape == (n_classes,)
    proba = softmax(((X - shift) / scale) @ W.T + b)
    np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X))
    if name != "sklearn:SGDClassifier":  # hinge loss: tlx's softmax of the scores, as for ridge
        np.testing.assert_allclose(proba, head.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logreg_probabilities_are_scikit_learns_own(n_classes):
    X, y = problem(n_classes)
    head = get_head("logreg").build().fit(X, y)
    W, b, shift, scale = head.linear_form()
    np.testing.assert_allclose(softmax(((X - shift) / scale) @ W.T + b), head.predict_proba(X), atol=1e-6)


def test_heads_that_are_not_linear_or_not_plain_stay_skops(tmp_path):
    X, y = problem(3)
    knn = get_head("knn").build().fit(X, y)
    save_head(knn, tmp_path / "knn")
    assert json.loads((tmp_path / "knn" / "head.json").read_text())["file"] == "head.skops"
    # class weights keyed by label: JSON would turn the keys into strings, so skops keeps them exactly
    weighted = get_head("logreg").build(class_weight={0: 1.0, 1: 2.0, 2: 1.0}).fit(X, y)
    save_head(weighted, tmp_path / "weighted")
    assert json.loads((tmp_path / "weighted" / "head.json").read_text())["file"] == "head.skops"
    np.testing.assert_array_equal(load_head(tmp_path / "weighted").predict(X), weighted.predict(X))


def test_a_logreg_run_saved_with_skops_by_an_earlier_tlx_still_loads(tmp_path, monkeypatch):
    from tlx.heads.pipeline import HeadPipeline

    X, y = problem(3)
    head = get_head("logreg").build().fit(X, y)
    with monkeypatch.context() as m:
        m.setattr(HeadPipeline, "to_arrays", lambda self: None)  # how tlx saved every scikit-learn head before
        save_head(head, tmp_path)
    assert json.loads((tmp_path / "head.json").read_text())["file"] == "head.skops"
    np.testing.assert_array_equal(load_head(tmp_path).predict_proba(X), head.predict_proba(X))


@pytest.mark.parametrize("named", ["sklearn.neighbors.KNeighborsClassifier", "os.system", "sklearn.svm.SVC"])
def test_a_head_json_naming_a_class_that_is_not_linear_is_refused(named, tmp_path):
    X, y = problem(2)
    save_head(get_head("logreg").build().fit(X, y), tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    meta["steps"][-1]["class"] = named
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match=r"is not a linear scikit-learn head tlx saved .*refusing it"):
        load_head(tmp_path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from tlx.extractor.extract import extract

    root = tmp_path_factory.mktemp("linear-sklearn")
    make_folder_dataset(root / "data", classes=("ants", "bees", "wasps"), per_class=8)
    return extract(root / "data", backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path


def test_fit_head_logreg_imports_no_skops(cache, tmp_path):
    code = (
        "import sys\nfrom tlx.heads.training.fit import fit_head\nfrom tlx.heads.runs import load_run\n"
        f"run = fit_head({str(cache)!r}, clf='logreg', out={str(tmp_path / 'run')!r}).run\n"
        "assert load_run(run).head.predict_proba is not None\n"
        "print(sorted(m for m in sys.modules if m.startswith('skops')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "run" / "head.safetensors").is_file()


@pytest.mark.parametrize("clf", ["logreg", "ridge"])
def test_finetune_init_head_starts_from_a_logreg_or_ridge_head(cli, cache, tmp_path, clf):
    from tlx.heads.training.fit import fit_head

    run = fit_head(cache, clf=clf, out=tmp_path / "head").run
    head_acc = json.loads((run / "metrics.json").read_text())["val_accuracy"]
    tiny_steps = ["--epochs", "1", "--unfreeze", "0", "--lr", "1e-12", "--head-lr", "1e-12", "--no-augment"]
    r = cli(
        "finetune", "--init-head", run, *tiny_steps, "--workers", "0", "--batch-size", "8", "--out", tmp_path / "ft"
    )
    assert r.exit_code == 0, r.stderr
    # evaluated as "epoch 0", before any step: the folded head predicts as the fitted one did
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["init_head_val_accuracy"] == pytest.approx(head_acc)


class _OwnLogisticRegression(LogisticRegression):
    """A user's subclass: not scikit-learn's, so not rebuilt from arrays."""


def test_a_users_own_linear_class_is_saved_with_skops(tmp_path):
    from tlx.heads.estimators import spec_from_estimator

    X, y = problem(2)
    head = spec_from_estimator(_OwnLogisticRegression()).build().fit(X, y)
    save_head(head, tmp_path)
    assert json.loads((tmp_path / "head.json").read_text())["file"] == "head.skops"
