"""The shared head contract over every registered head (tlx's linear head and scikit-learn's
estimators by their short names), plus the linear head's own claims."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError

from tlx.errors import RunError
from tlx.heads import (
    HeadError,
    NotExportableError,
    ParamError,
    UnknownHeadError,
    get_head,
    list_heads,
    parse_params,
    softmax,
)
from tlx.heads.io import load_head, save_head

HEADS = list(list_heads())


def blobs(n_per_class=40, n_classes=3, d=16, sep=3.0, seed=0):
    """Gaussian blobs: an easy, linearly separable problem with labels 0..C-1."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * sep
    X = np.concatenate([c + rng.normal(size=(n_per_class, d)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n_per_class)
    perm = rng.permutation(len(y))
    return X[perm] * 5 + 10, y[perm]  # off-centre and scaled, so standardization matters


def fast(name: str) -> dict:
    return {"n_estimators": 20} if name == "rf" else {"max_iter": 100} if name == "mlp" else {}


def test_registry_has_the_issue_heads():
    assert {"linear", "logreg", "svm", "knn", "ridge", "rf", "mlp"} <= set(HEADS)
    for name in HEADS:
        spec = get_head(name)
        assert spec.main_param in spec.defaults(), name
        assert len(spec.grid) >= 5, name
    assert HEADS[0] == "linear" and get_head("linear").exportable
    assert [n for n in HEADS if get_head(n).exportable] == ["linear", "logreg", "ridge"]
    with pytest.raises(UnknownHeadError, match="expected one of linear"):
        get_head("nope")


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_head_contract(name, n_classes):
    spec = get_head(name)
    X, y = blobs(n_classes=n_classes)
    head = spec.build(**fast(name))
    # __init__ only stores parameters: clone / get_params round-trip, nothing learned yet
    assert clone(head).get_params(deep=False).keys() == head.get_params(deep=False).keys()
    assert is_classifier(head)
    with pytest.raises((HeadError, NotFittedError), match="not fitted"):
        head.predict_proba(X)

    assert head.fit(X, y) is head
    assert head.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(head.classes_, np.arange(n_classes))
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), n_classes)  # two classes still give two columns
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    pred = head.predict(X)
    assert set(pred) <= set(range(n_classes))
    assert np.mean(pred == y) > 0.9, f"{name} fails an easy problem"

    with pytest.raises((HeadError, ValueError), match=r"features are 15-wide but this .* expects 16|X has 15 features"):
        head.predict(X[:, :15])


@pytest.mark.parametrize("name", HEADS)
def test_single_class_training_set_is_refused(name):
    X, _ = blobs()
    with pytest.raises(HeadError, match="at least 2 classes"):
        get_head(name).build(**fast(name)).fit(X, np.zeros(len(X), dtype=int))


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_form_or_not_exportable(name, n_classes):
    X, y = blobs(n_classes=n_classes)
    head = get_head(name).build(**fast(name)).fit(X, y)
    if not get_head(name).exportable:
        with pytest.raises(NotExportableError, match=f"{name} has no linear form: export .* need a linear head"):
            head.linear_form()
        return
    W, b, shift, scale = head.linear_form()
    assert W.dtype.kind == "f" and W.shape == (n_classes, X.shape[1]) and b.shape == (n_classes,)
    Z = X if shift is None else (X - shift) / scale
    np.testing.assert_allclose(softmax(Z @ W.T + b), head.predict_proba(X), atol=1e-5)


def test_linear_l2norm_has_no_linear_form():
    X, y = blobs()
    head = get_head("linear").build(l2norm=True).fit(X, y)
    with pytest.raises(NotExportableError, match="l2norm"):
        head.linear_form()


@pytest.mark.parametrize("name", HEADS)
def test_save_load_round_trip(name, tmp_path):
    X, y = blobs()
    head = get_head(name).build(**fast(name)).fit(X, y)
    save_head(head, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    assert meta["head"] == name and len(meta["sha256"]) == 64
    assert meta["file"] == ("head.safetensors" if get_head(name).exportable else "head.skops")
    loaded = load_head(tmp_path)
    assert type(loaded) is type(head) and loaded.params_used() == head.params_used()
    assert loaded.name == name
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X), atol=1e-7)


@pytest.mark.parametrize("name", ["linear", "logreg", "knn"])
def test_changed_head_file_fails_the_integrity_check(name, tmp_path):
    X, y = blobs()
    save_head(get_head(name).build().fit(X, y), tmp_path)
    file = tmp_path / json.loads((tmp_path / "head.json").read_text())["file"]
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(RunError, match="failed its integrity check"):
        load_head(tmp_path)


@pytest.mark.parametrize("name", ["svm", "rf", "mlp"])
def test_a_head_saved_with_skops_by_an_earlier_tlx_is_refused_with_a_way_out(name, tmp_path):
    # What such a run holds: head.json naming a head.skops file, without the record of its types.
    (tmp_path / "head.skops").write_bytes(b"PK\x03\x04 a zip of pickled scikit-learn objects")
    _write_meta(tmp_path, name, "head.skops")
    with pytest.raises(
        RunError, match=f"saved with skops by an earlier tlx.*refit it with `tlx fit-head --clf {name}`"
    ):
        load_head(tmp_path)


@pytest.mark.parametrize("name", ["svm", "rf", "mlp", "logreg", "ridge", "knn"])
def test_a_head_saved_by_the_numpy_lookalikes_is_refused_with_a_way_out(name, tmp_path):
    from safetensors.numpy import save_file

    save_file({"coef_": np.zeros((2, 16), np.float32)}, str(tmp_path / "head.safetensors"))
    _write_meta(tmp_path, name, "head.safetensors")
    with pytest.raises(RunError, match=f"saved by an earlier tlx.*refit it with `tlx fit-head --clf {name}`$"):
        load_head(tmp_path)


def _write_meta(run_dir, name, file, **extra):
    from tlx.heads.io import sha256_file

    meta = {
        "format": "tlx-head",
        "format_version": 1,
        "head": name,
        "params": {},
        "classes": [0, 1],
        "n_features_in": 16,
        "file": file,
        "sha256": sha256_file(run_dir / file),
        **extra,
    }
    (run_dir / "head.json").write_text(json.dumps(meta))


def test_a_skops_file_with_types_tlx_did_not_record_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = blobs()
    head = get_head("knn").build().fit(X, y)
    save_head(head, tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    # Someone swaps in a pipeline that calls a function of their choosing, and rewrites the hash.
    evil = Pipeline([("f", FunctionTransformer(json.loads)), *head.steps[1:]])
    sio.dump(evil, tmp_path / "head.skops")
    types = sio.get_untrusted_types(file=tmp_path / "head.skops")
    assert "json.loads" in types and "json.loads" not in meta["untrusted_types"]
    _write_meta(tmp_path, "knn", "head.skops", untrusted_types=meta["untrusted_types"])
    with pytest.raises(RunError, match="holds types that tlx did not save"):
        load_head(tmp_path)
    # ... and recording them too does not help: they come from outside scikit-learn, numpy, scipy
    _write_meta(tmp_path, "knn", "head.skops", untrusted_types=types)
    with pytest.raises(RunError, match=r"outside scikit-learn, numpy and scipy \(json\.loads"):
        load_head(tmp_path)


def test_arrays_of_another_shape_are_refused(tmp_path):
    X, y = blobs()
    save_head(get_head("linear").build().fit(X, y), tmp_path)
    meta = json.loads((tmp_path / "head.json").read_text())
    meta["n_features_in"] = 15  # the arrays say 16
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="refusing a foreign file"):
        load_head(tmp_path)


def test_garbage_head_files_are_refused(tmp_path):
    with pytest.raises(RunError, match=r"no head\.json"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text("{not json")
    with pytest.raises(RunError, match="not a tlx head"):
        load_head(tmp_path)


def test_linear_head_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = blobs(n_per_class=150, n_classes=4, d=32, sep=0.6, seed=1)  # overlapping: not 100 %
    Xtr, ytr, Xva, yva = X[:400], y[:400], X[400:], y[400:]
    ours = get_head("linear").build().fit(Xtr, ytr)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(Xtr, ytr)
    acc_ours, acc_ref = np.mean(ours.predict(Xva) == yva), np.mean(ref.predict(Xva) == yva)
    assert 0.6 < acc_ref < 1.0
    assert acc_ours >= acc_ref - 0.02, (acc_ours, acc_ref)


def test_linear_head_is_deterministic_and_decays():
    X, y = blobs()
    a = get_head("linear").build().fit(X, y)
    b = get_head("linear").build().fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    strong = get_head("linear").build(weight_decay=10.0).fit(X, y)
    assert np.linalg.norm(strong.coef_) < np.linalg.norm(a.coef_)


# svm is left out: its sigmoid calibration re-learns the class priors, so argmax of its
# probabilities barely moves with class weights (they still change its decision function).
# Scored on held-out rows: rf and mlp fit their training rows perfectly either way.
@pytest.mark.parametrize("name", [n for n in HEADS if get_head(n).supports_class_weight and n not in ("svm", "rf")])
def test_balanced_class_weight_helps_the_minority(name):
    def imbalanced(seed):
        rng = np.random.default_rng(seed)
        X = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(1.0, 1, (20, 4))]).astype(np.float32)
        return X, np.r_[np.zeros(300, int), np.ones(20, int)]

    (X, y), (X_new, y_new) = imbalanced(0), imbalanced(1)
    plain = get_head(name).build(**fast(name)).fit(X, y)
    balanced = get_head(name).build(class_weight="balanced", **fast(name)).fit(X, y)
    assert np.mean(balanced.predict(X_new[y_new == 1]) == 1) > np.mean(plain.predict(X_new[y_new == 1]) == 1)


def test_parse_params_types_and_errors():
    assert parse_params(get_head("svm"), ["C=0.5", "kernel=linear", "gamma=0.1"]) == {
        "C": 0.5,
        "kernel": "linear",
        "gamma": 0.1,
    }
    assert parse_params(get_head("knn"), ["n_neighbors=3"]) == {"n_neighbors": 3}
    assert parse_params(get_head("mlp"), ["hidden_layer_sizes=128,64"]) == {"hidden_layer_sizes": (128, 64)}
    assert parse_params(get_head("logreg"), ["class_weight=balanced"]) == {"class_weight": "balanced"}
    with pytest.raises(ParamError, match="valid keys are C, class_weight"):
        parse_params(get_head("logreg"), ["c=1"])
    with pytest.raises(ParamError, match="expects a int"):
        parse_params(get_head("knn"), ["n_neighbors=3.5"])
    with pytest.raises(ParamError, match="KEY=VALUE"):
        parse_params(get_head("knn"), ["n_neighbors"])
