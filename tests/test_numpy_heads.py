"""svm, rf and mlp, computed in numpy, against scikit-learn's SVC (+ CalibratedClassifierCV),
RandomForestClassifier and MLPClassifier(solver="lbfgs") on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlx.heads import HeadError
from tlx.heads.forest import RfHead
from tlx.heads.mlp import MlpHead, MlpProblem, RowSpace
from tlx.heads.svm import SvmHead, platt
from tlx.heads.training.split import stratified_folds


def _blobs(n=300, n_classes=2, d=20, sep=0.5, seed=0):
    """Overlapping Gaussian blobs, off-centre and scaled per feature (standardization matters)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n_classes, d))[y] * sep + rng.normal(size=(n, d))
    return (X * rng.uniform(0.5, 3, d) + 2).astype(np.float32), y


# -- folds ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("k", [2, 5])
def test_stratified_folds_are_scikit_learns(seed, k):
    y = np.random.default_rng(seed).choice(["bee", "ant", "wasp"], size=61, p=[0.5, 0.3, 0.2])
    ref = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)
    for (train, test), (ref_train, ref_test) in zip(stratified_folds(y, k, seed), ref, strict=True):
        np.testing.assert_array_equal(train, ref_train)
        np.testing.assert_array_equal(test, ref_test)


# -- mlp -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_mlp_objective_and_gradient_are_scikit_learns(n_classes, weighted):
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 6)) * rng.uniform(0.5, 4, 6) + 3  # float64: the comparison is exact
    y = rng.integers(0, n_classes, 90)
    weights = rng.uniform(0.5, 2.0, 90) if weighted else None
    shift, scale = X.mean(axis=0), X.std(axis=0)
    ours = MlpProblem(X, y, n_classes, (7, 5), alpha=0.3, weights=weights, shift=shift, scale=scale)
    theta = rng.normal(size=len(ours.initial(0))) * 0.7

    ref = MLPClassifier(hidden_layer_sizes=(7, 5), solver="lbfgs", alpha=0.3, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit((X - shift) / scale, y)
    ref.coefs_, ref.intercepts_ = (list(map(np.copy, part)) for part in ours.unpack(theta))
    Y = ref._label_binarizer.transform(y).astype(np.float64)
    layers = ref.n_layers_
    coef_grads = [np.empty_like(W) for W in ref.coefs_]
    intercept_grads = [np.empty_like(b) for b in ref.intercepts_]
    loss, coef_grads, intercept_grads = ref._backprop(
        (X - shift) / scale, Y, weights, [(X - shift) / scale] + [None] * (layers - 1), [None] * (layers - 1),
        coef_grads, intercept_grads,
    )  # fmt: skip
    value, grad = ours.value_and_grad(theta)
    assert value == pytest.approx(loss, abs=1e-6)
    np.testing.assert_allclose(grad, np.concatenate([g.ravel() for g in coef_grads + intercept_grads]), atol=1e-6)


def test_mlp_starts_from_scikit_learns_glorot_draw():
    from sklearn.neural_network import MLPClassifier

    ref = MLPClassifier(hidden_layer_sizes=(9,), random_state=3)
    ref._random_state = np.random.RandomState(3)
    drawn = [ref._init_coef(12, 9, np.float64), ref._init_coef(9, 4, np.float64)]
    start = MlpProblem(np.zeros((5, 12)), np.arange(5) % 4, 4, (9,), alpha=0.0).initial(3)
    expected = np.concatenate([drawn[0][0].ravel(), drawn[1][0].ravel(), drawn[0][1], drawn[1][1]])
    np.testing.assert_array_equal(start, expected)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_mlp_accuracy_matches_scikit_learns(n_classes):
    from sklearn.neural_network import MLPClassifier

    X, y = _blobs(n=500, n_classes=n_classes, d=30, sep=0.6, seed=2)
    train, val = slice(0, 350), slice(350, None)
    ours = MlpHead(alpha=1.0).fit(X[train], y[train])
    ref = make_pipeline(StandardScaler(), MLPClassifier((256,), solver="lbfgs", alpha=1.0, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X[train], y[train])
    acc, ref_acc = ours.score(X[val], y[val]), ref.score(X[val], y[val])
    assert ref_acc > 0.75 and acc >= ref_acc - 0.03, (acc, ref_acc)
    # The same objective from the same start: the minima found are close.
    assert ours.loss_ == pytest.approx(ref[-1].loss_, rel=0.05)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_mlp_row_space_is_the_same_problem_in_fewer_unknowns(n_classes):
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(40, 120)) * rng.uniform(0.5, 3, 120) + 1).astype(np.float32)  # fewer rows than features
    y = rng.integers(0, n_classes, 40)
    shift, scale = X.mean(axis=0), X.std(axis=0)
    full = MlpProblem(X.astype(np.float64), y, n_classes, (16,), alpha=0.5, shift=shift, scale=scale)
    start = full.initial(0)
    space = RowSpace(X, shift, scale, full, start)
    reduced = space.problem(y, n_classes, (16,), 0.5, None)
    assert len(space.start) < len(start) / 2
    np.testing.assert_allclose(space.lift(space.start), start, atol=1e-10)
    step = rng.normal(size=len(space.start)) * 0.3
    step[40 * 16 + 1 : 41 * 16] = 0  # the extra row moves along its first entry only, as under L-BFGS
    for theta in (space.start, space.start + step):
        assert reduced.value_and_grad(theta)[0] == pytest.approx(full.value_and_grad(space.lift(theta))[0], abs=1e-9)


def test_mlp_with_fewer_rows_than_features_reaches_scikit_learns_accuracy():
    from sklearn.neural_network import MLPClassifier

    X, y = _blobs(n=300, n_classes=3, d=400, sep=0.25, seed=9)
    train, val = slice(0, 150), slice(150, None)
    ours = MlpHead(alpha=1.0).fit(X[train], y[train])
    W = [ours.coef_0, ours.coef_1, ours.intercept_0, ours.intercept_1]
    full = MlpProblem(X[train].astype(np.float64), y[train], 3, (256,), 1.0, shift=ours.shift_, scale=ours.scale_)
    assert full.value_and_grad(np.concatenate([w.astype(np.float64).ravel() for w in W]))[0] == pytest.approx(
        ours.loss_, rel=1e-4
    )
    ref = make_pipeline(StandardScaler(), MLPClassifier((256,), solver="lbfgs", alpha=1.0, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X[train], y[train])
    acc, ref_acc = ours.score(X[val], y[val]), ref.score(X[val], y[val])
    assert ref_acc > 0.6 and acc >= ref_acc - 0.03, (acc, ref_acc)


# -- svm -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kernel", ["rbf", "linear"])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_svm_decision_function_is_scikit_learns(n_classes, kernel, class_weight):
    from sklearn.svm import SVC

    X, y = _blobs(n=240, n_classes=n_classes, d=12, sep=0.7, seed=3)
    train, val = slice(0, 180), slice(180, None)
    ours = SvmHead(kernel=kernel, class_weight=class_weight, C=0.5).fit(X[train], y[train])
    scaler = StandardScaler().fit(X[train])
    ref = SVC(kernel=kernel, class_weight=class_weight, C=0.5).fit(scaler.transform(X[train]), y[train])
    expected = ref.decision_function(scaler.transform(X[val]))
    got = ours.decision_function(X[val])
    assert got.shape == expected.shape
    # libsvm stops at tol=1e-3 on the dual; both stop there, along slightly different paths
    assert np.abs(got - expected).max() <= 2e-3 * np.abs(expected).max()
    assert np.abs(ours.n_support_ - ref.n_support_).max() <= 2
    clear = np.abs(expected) > 2e-3 * np.abs(expected).max()  # the same side of every boundary
    np.testing.assert_array_equal(np.sign(got[clear]), np.sign(expected[clear]))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_svm_probabilities_are_calibrated_classifier_cvs(n_classes):
    from sklearn.svm import SVC

    X, y = _blobs(n=300, n_classes=n_classes, d=12, sep=0.5, seed=4)
    train, val = slice(0, 220), slice(220, None)
    ours = SvmHead(seed=5).fit(X[train], y[train])
    folds = StratifiedKFold(5, shuffle=True, random_state=5)
    ref = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), method="sigmoid", cv=folds, ensemble=False))
    ref.fit(X[train], y[train])
    proba, expected = ours.predict_proba(X[val]), ref.predict_proba(X[val])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert np.abs(proba - expected).max() < 0.01
    assert abs(ours.score(X[val], y[val]) - ref.score(X[val], y[val])) <= 0.02


def test_platt_fit_is_scikit_learns_sigmoid_calibration():
    from sklearn.calibration import _sigmoid_calibration

    rng = np.random.default_rng(6)
    positive = rng.random(200) < 0.4
    f = np.where(positive, 1.0, -1.0) * 0.8 + rng.normal(size=200)
    slope, offset = platt(f, positive)
    assert [slope, offset] == pytest.approx(list(_sigmoid_calibration(f, positive.astype(int))), rel=1e-4, abs=1e-6)


def test_svm_refuses_more_rows_than_its_kernel_matrix_allows(monkeypatch):
    import tlx.heads.svm as svm

    monkeypatch.setattr(svm, "MAX_ROWS", 50)
    X, y = _blobs(n=60)
    with pytest.raises(HeadError, match=r"at most 50 training images \(got 60\).*--clf linear or --clf logreg"):
        SvmHead().fit(X, y)


# -- rf ------------------------------------------------------------------------------------------
def _forest_accuracies(X, y, train, val, **params):
    """Mean validation accuracy over three seeds each: one seed's forest moves by a point or two."""
    from sklearn.ensemble import RandomForestClassifier

    ours, ref = [], []
    for seed in range(3):
        ours.append(RfHead(n_estimators=60, seed=seed, **params).fit(X[train], y[train]).score(X[val], y[val]))
        theirs = RandomForestClassifier(60, random_state=seed, n_jobs=1, **params).fit(X[train], y[train])
        ref.append(theirs.score(X[val], y[val]))
    return float(np.mean(ours)), float(np.mean(ref))


def test_rf_accuracy_is_scikit_learns_on_synthetic_data():
    X, y = _blobs(n=1100, n_classes=3, d=40, sep=0.35, seed=7)
    ours, ref = _forest_accuracies(X, y, slice(0, 500), slice(500, None))  # 600 val rows: a row is 0.17 points
    assert 0.6 < ref < 1.0 and abs(ours - ref) <= 0.02 + 1e-9, (ours, ref)


def test_rf_accuracy_is_scikit_learns_on_handwritten_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))[:900]
    X, y = X[order].astype(np.float32), y[order]
    ours, ref = _forest_accuracies(X, y, slice(0, 600), slice(600, None), min_samples_leaf=2)
    assert ref > 0.85 and abs(ours - ref) <= 0.02 + 1e-9, (ours, ref)


def test_rf_is_deterministic_for_a_seed():
    X, y = _blobs(n=200, n_classes=3)
    a, b = RfHead(n_estimators=30, seed=4).fit(X, y), RfHead(n_estimators=30, seed=4).fit(X, y)
    for name in RfHead._tensors:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = RfHead(n_estimators=30, seed=5).fit(X, y)
    assert len(c.feature_) != len(a.feature_) or not np.array_equal(c.feature_, a.feature_)


@pytest.mark.parametrize("min_samples_leaf", [1, 5])
def test_rf_min_samples_leaf_is_honoured(min_samples_leaf):
    X, y = _blobs(n=300, n_classes=2, sep=0.3)
    head = RfHead(n_estimators=20, min_samples_leaf=min_samples_leaf).fit(X, y)
    leaves = head.apply(X)  # every training row, in-bag or not, lands in one leaf per tree
    smallest = min(np.unique(leaves[:, tree], return_counts=True)[1].min() for tree in range(20))
    if min_samples_leaf == 1:
        assert smallest < 5  # without the limit, some leaf is smaller: the check below can fail
    else:
        assert smallest >= 5
    assert (head.feature_ >= 0).sum() > 20  # trees did split


def test_rf_refuses_a_forest_whose_children_point_backwards(tmp_path):
    from tlx.errors import RunError
    from tlx.heads.io import load_head, save_head

    X, y = _blobs(n=100)
    head = RfHead(n_estimators=3).fit(X, y)
    inner = np.flatnonzero(head.feature_ >= 0)[0]
    head.left_[inner] = inner  # a loop: predicting would never reach a leaf
    save_head(head, tmp_path)
    with pytest.raises(RunError, match="refusing a foreign file"):
        load_head(tmp_path)


@pytest.mark.parametrize("n_classes, min_samples_leaf", [(2, 1), (3, 1), (5, 3)])
def test_rf_sorted_and_dense_split_searches_grow_the_same_forest(monkeypatch, n_classes, min_samples_leaf):
    import tlx.heads.forest as forest

    X, y = _blobs(n=300, n_classes=n_classes, d=30, sep=0.2, seed=8)
    mixed = RfHead(n_estimators=15, min_samples_leaf=min_samples_leaf).fit(X, y)
    monkeypatch.setattr(forest, "_best_splits", forest._dense_splits)
    dense = RfHead(n_estimators=15, min_samples_leaf=min_samples_leaf).fit(X, y)
    for name in RfHead._tensors:
        np.testing.assert_array_equal(getattr(mixed, name), getattr(dense, name))
