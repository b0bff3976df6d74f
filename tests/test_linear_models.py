"""logreg and ridge, computed in numpy, are scikit-learn's LogisticRegression and
RidgeClassifier: the same coefficients and probabilities on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlx.heads.linear_models import LogregHead, RidgeHead


def _data(n_classes: int, n=400, d=20, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n_classes, d))[y] * 0.8 + rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + 5
    return X.astype(np.float32), np.array(["ant", "bee", "wasp", "fly"])[y]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logreg_equals_scikit_learns(n_classes, class_weight, C):
    X, y = _data(n_classes)
    ours = LogregHead(C=C, class_weight=class_weight, tol=1e-8).fit(X, y)
    theirs = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, class_weight=class_weight, tol=1e-10, max_iter=5000)
    )
    theirs.fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-3)
    assert list(ours.classes_) == list(theirs.classes_)
    W = ours.coef_
    ref = theirs[-1].coef_
    if n_classes == 2:  # scikit-learn's one vector is our difference of the two rows
        np.testing.assert_allclose(W[1] - W[0], ref[0], atol=5e-3)
    else:
        np.testing.assert_allclose(W, ref, atol=5e-3)


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("alpha", [0.1, 100.0])
def test_ridge_equals_scikit_learns(n_classes, class_weight, alpha):
    X, y = _data(n_classes, seed=1)
    ours = RidgeHead(alpha=alpha, class_weight=class_weight).fit(X, y)
    theirs = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha, class_weight=class_weight)).fit(X, y)
    scores = theirs.decision_function(X)
    ours_scores = ours.decision_function(X)
    if n_classes == 2:
        np.testing.assert_allclose(ours_scores[:, 1], scores, atol=1e-4)
    else:
        np.testing.assert_allclose(ours_scores, scores, atol=1e-4)
    assert (ours.predict(X) == theirs.predict(X)).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
@pytest.mark.parametrize("weights", ["distance", "uniform"])
@pytest.mark.parametrize("k", [1, 5, 1000])
def test_knn_equals_scikit_learns(metric, weights, k):
    from sklearn.neighbors import KNeighborsClassifier

    from tlx.heads.neighbors import KnnHead

    X, y = _data(3, n=300, seed=2)
    Q = X[:40] + np.random.default_rng(3).normal(size=(40, X.shape[1])).astype(np.float32)
    Q[:3] = X[:3]  # exact training rows: distance 0 decides alone
    ours = KnnHead(n_neighbors=k, weights=weights, metric=metric).fit(X, y)
    theirs = make_pipeline(
        StandardScaler(), KNeighborsClassifier(n_neighbors=min(k, len(X)), weights=weights, metric=metric)
    ).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(Q), theirs.predict_proba(Q), atol=1e-6)
