"""The numpy metrics equal scikit-learn's, edge cases included: a class missing from val, a
class never predicted, one class only, probabilities of 0 and 1."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from tlx.common.metrics import compute_metrics

K = 4
NAMES = ["a", "b", "c", "d"]


def _sklearn(y, proba):
    pred = proba.argmax(axis=1)
    labels = np.arange(K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" and the like
        return {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
            "prfs": skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0),
            "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
            "log_loss": skm.log_loss(y, proba, labels=labels),
        }


def _assert_equal(y, proba):
    got, want = compute_metrics(y, proba, NAMES), _sklearn(y, proba)
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    assert got["confusion_matrix"] == want["confusion_matrix"]
    for name, p, r, f, s in zip(NAMES, *want["prfs"], strict=True):
        assert got["per_class"][name] == pytest.approx({"precision": p, "recall": r, "f1": f, "support": s})


def _onehot_proba(pred, rng, sharp=False):
    proba = rng.dirichlet(np.ones(K), size=len(pred)) * 0.1
    proba[np.arange(len(pred)), pred] += 1.0
    if sharp:
        proba = np.eye(K)[pred]  # exactly 0 and 1: log loss clipped at eps
    return proba / proba.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K - (seed % 2), 60)  # odd seeds: the last class has no image
    proba = rng.dirichlet(np.ones(K), size=60)
    proba[np.arange(60), y] += rng.uniform(0, 0.6, 60) * (seed < 2)
    proba /= proba.sum(axis=1, keepdims=True)
    _assert_equal(y, proba)


def test_class_missing_from_val_and_never_predicted_is_left_out_of_macro_f1():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2])  # class 3 has no val image
    pred = np.array([0, 1, 1, 1, 2, 0])  # ... and is never predicted
    got = compute_metrics(y, _onehot_proba(pred, rng), NAMES)
    f1s = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 2 * 1 / (2 + 1)]
    assert got["macro_f1"] == pytest.approx(np.mean(f1s))  # over 3 classes, not 4
    _assert_equal(y, _onehot_proba(pred, rng))


@pytest.mark.parametrize(
    ("y", "pred"),
    [
        ([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 3, 3]),  # class 3 predicted but has no image; 2 never predicted
        ([1, 1, 1, 1], [1, 1, 1, 1]),  # one class, all right
        ([2, 2, 2], [0, 1, 3]),  # one class, all wrong
        ([0, 1, 2, 3], [3, 2, 1, 0]),
    ],
)
@pytest.mark.parametrize("sharp", [False, True])
def test_edge_cases_equal_scikit_learn(y, pred, sharp):
    rng = np.random.default_rng(1)
    _assert_equal(np.array(y), _onehot_proba(np.array(pred), rng, sharp))
