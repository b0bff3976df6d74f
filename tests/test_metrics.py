"""The numpy metrics equal scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from tlx.common.metrics import compute_metrics


@pytest.mark.parametrize("seed", range(4))
def test_metrics_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    k = 4
    y = rng.integers(0, k - (seed % 2), 60)  # odd seeds: the last class has no image
    proba = rng.dirichlet(np.ones(k), size=60)
    proba[np.arange(60), y] += rng.uniform(0, 0.6, 60) * (seed < 2)  # even: mostly right
    proba /= proba.sum(axis=1, keepdims=True)
    got = compute_metrics(y, proba, ["a", "b", "c", "d"])
    pred = proba.argmax(axis=1)
    labels = np.arange(k)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f.mean())
    assert got["balanced_accuracy"] == pytest.approx(r[s > 0].mean())
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=labels), rel=1e-9)
    for name, pi, ri, fi, si in zip("abcd", p, r, f, s, strict=False):
        assert got["per_class"][name] == pytest.approx({"precision": pi, "recall": ri, "f1": fi, "support": si})
