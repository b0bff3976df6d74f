"""scikit-learn's own classifiers as heads, and tlx's linear head as a scikit-learn classifier:
the short names give exactly scikit-learn's pipeline, ``sklearn:<ClassName>`` any listed
classifier, a user's estimator object goes through ``tlx.fit_head``, ``Features.groups`` feeds
group-aware cross-validation, and ``sample_weight`` is honoured."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_folder_dataset
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight

from tlx.heads import HeadError, ParamError, UnknownHeadError, get_head
from tlx.heads.estimators import find_classifier
from tlx.heads.linear import LinearHead

# What each short name must be: scikit-learn's own estimator, standardized first.
REFERENCE = {
    "logreg": lambda: LogisticRegression(max_iter=1000),
    "ridge": RidgeClassifier,
    "knn": KNeighborsClassifier,
    "svm": lambda: CalibratedClassifierCV(SVC(), ensemble=False),
    "rf": lambda: RandomForestClassifier(random_state=0),
    "mlp": lambda: MLPClassifier(random_state=0, max_iter=300),
}


@pytest.fixture(scope="module")
def split():
    """A small, overlapping 3-class problem, off-centre so that standardization matters."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 12)) * 1.2
    X = np.concatenate([c + rng.normal(size=(60, 12)) for c in centers]) * 4 + 7
    y = np.repeat(np.arange(3), 60)
    perm = rng.permutation(len(y))
    X, y = X[perm].astype(np.float32), y[perm]
    return X[:120], y[:120], X[120:], y[120:]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_short_names_are_scikit_learns_own_pipeline(name, split):
    Xtr, ytr, Xva, _ = split
    params = {"max_iter": 300} if name == "mlp" else {}
    head = get_head(name).build(**params).fit(Xtr, ytr)
    ref = make_pipeline(StandardScaler(), REFERENCE[name]()).fit(Xtr, ytr)
    np.testing.assert_array_equal(head.predict(Xva), ref.predict(Xva))
    if hasattr(ref, "predict_proba"):
        np.testing.assert_allclose(head.predict_proba(Xva), ref.predict_proba(Xva), rtol=1e-12, atol=1e-12)
    assert type(head.model()).__name__ == type(ref[-1].estimator if name == "svm" else ref[-1]).__name__


def test_ridge_probabilities_keep_its_predictions(split):
    Xtr, ytr, Xva, _ = split
    head = get_head("ridge").build().fit(Xtr, ytr)
    proba = head.predict_proba(Xva)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(Xva))
    two = get_head("ridge").build().fit(Xtr[ytr < 2], ytr[ytr < 2])
    np.testing.assert_array_equal(two.classes_[two.predict_proba(Xva).argmax(axis=1)], two.predict(Xva))


def test_any_listed_classifier_by_class_name(split):
    Xtr, ytr, Xva, _ = split
    spec = get_head("sklearn:HistGradientBoostingClassifier")
    head = spec.build(**{"max_iter": 20}).fit(Xtr, ytr)
    ref = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20)).fit(Xtr, ytr)
    np.testing.assert_array_equal(head.predict(Xva), ref.predict(Xva))
    assert spec.supports_class_weight and not spec.exportable and spec.grid == ()
    lda = get_head("sklearn:LinearDiscriminantAnalysis").build().fit(Xtr, ytr)
    assert lda.predict_proba(Xva).shape == (len(Xva), 3)
    with pytest.raises(UnknownHeadError, match="sklearn:LinearRegression is not a scikit-learn classifier"):
        get_head("sklearn:LinearRegression")
    with pytest.raises(UnknownHeadError, match="expected one of AdaBoostClassifier"):
        get_head("sklearn:Nope")
    with pytest.raises(ParamError, match="needs constructor arguments"):
        get_head("sklearn:VotingClassifier").defaults()


def test_class_name_lookup_finds_what_all_estimators_lists():
    from sklearn.utils.discovery import all_estimators

    for name, cls in all_estimators(type_filter="classifier"):
        assert find_classifier(name) is cls, name


def test_scikit_learn_validates_the_params_in_one_line():
    with pytest.raises(ParamError, match=r"^--param C=-1: The 'C' parameter of SVC must be"):
        get_head("svm").validate({"C": -1})
    get_head("svm").validate({"C": 2.0, "kernel": "linear"})


def test_balanced_class_weight_goes_to_sample_weight_where_there_is_no_class_weight(split):
    Xtr, ytr, Xva, _ = split
    keep = (ytr > 0) | (np.arange(len(ytr)) % 4 == 0)  # class 0 becomes the minority
    X, y = Xtr[keep], ytr[keep]
    spec = get_head("mlp")
    assert spec.supports_class_weight and "class_weight" not in spec.defaults()
    assert not get_head("knn").supports_class_weight  # KNeighborsClassifier.fit takes no weights
    head = spec.build(class_weight="balanced", max_iter=300).fit(X, y)
    ref = make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=300))
    ref.fit(X, y, mlpclassifier__sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_allclose(head.predict_proba(Xva), ref.predict_proba(Xva), rtol=1e-12, atol=1e-12)
    plain = make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=300)).fit(X, y)
    assert not np.allclose(plain.predict_proba(Xva), head.predict_proba(Xva))


# -- tlx's linear head, a scikit-learn classifier ----------------------------------------------------
def test_linear_head_is_a_scikit_learn_classifier(split):
    Xtr, ytr, _, _ = split
    head = LinearHead(weight_decay=1e-2)
    assert is_classifier(head) and clone(head).get_params() == head.get_params()
    scores = cross_val_score(head, Xtr, ytr, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6


def test_linear_head_honours_sample_weight(split):
    Xtr, ytr, Xva, _ = split
    w = np.where(np.arange(len(ytr)) % 3 == 0, 0.0, 1.0)
    weighted = LinearHead().fit(Xtr, ytr, sample_weight=w)
    # weight 0 = the row is not there; weight 2 = the row twice (same standardization: the scaler
    # sees every row, as StandardScaler does in a pipeline whose fit weights go to the estimator)
    dropped = LinearHead().fit(Xtr[w > 0], ytr[w > 0])
    assert not np.allclose(weighted.coef_, LinearHead().fit(Xtr, ytr).coef_)
    np.testing.assert_array_equal(weighted.predict(Xva), dropped.predict(Xva))
    twice = LinearHead().fit(Xtr, ytr, sample_weight=np.r_[np.full(10, 2.0), np.ones(len(ytr) - 10)])
    assert not np.allclose(twice.coef_, LinearHead().fit(Xtr, ytr).coef_)
    with pytest.raises(HeadError, match="sample_weight must be 120 finite, non-negative"):
        LinearHead().fit(Xtr, ytr, sample_weight=-w)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from tlx.extractor.extract import extract

    root = tmp_path_factory.mktemp("estimators")
    make_folder_dataset(root / "data", classes=("ants", "bees", "wasps"), per_class=8)
    return extract(root / "data", backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path


def test_features_groups_feed_group_kfold(cache):
    import tlx

    feats = tlx.load_features(cache)
    assert len(feats.groups) == len(feats.y) and len(set(feats.groups.tolist())) == len(feats.y)
    sub = feats.subset(np.arange(len(feats.y))[::2])
    np.testing.assert_array_equal(sub.groups, feats.groups[::2])  # an image keeps its group in a subset
    scores = cross_val_score(LinearHead(), feats.X, feats.y, groups=feats.groups, cv=StratifiedGroupKFold(3))
    assert scores.shape == (3,)


def test_copies_of_an_image_share_a_group(tmp_path):
    import shutil

    import tlx
    from tlx.extractor.extract import extract

    data = make_folder_dataset(tmp_path / "data", per_class=4)
    shutil.copy(data / "ants" / "ants_0.png", data / "ants" / "copy_of_ants_0.png")
    feats = tlx.load_features(extract(data, backbone="tiny_cnn", cache_dir=tmp_path / "cache", workers=0).path)
    group = dict(zip(feats.paths, feats.groups.tolist(), strict=True))
    assert group["ants/ants_0.png"] == group["ants/copy_of_ants_0.png"]
    assert len(set(feats.groups.tolist())) == len(feats.y) - 1  # every other image is a group of its own


def test_fit_head_takes_an_estimator_or_a_pipeline_object(cache, tmp_path):
    import tlx
    from tlx.heads.io import load_head

    est = LogisticRegression(C=0.5, max_iter=500)
    result = tlx.fit_head(cache, clf=est, out=tmp_path / "est")
    assert result.clf == "estimator:LogisticRegression" and result.params["C"] == 0.5
    assert est.get_params()["C"] == 0.5 and not hasattr(est, "coef_")  # cloned, never fitted in place
    head = load_head(result.run)
    assert [name for name, _ in head.steps] == ["standardscaler", "logisticregression"]

    pipe = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3))
    piped = tlx.fit_head(cache, clf=pipe, out=tmp_path / "pipe")
    assert piped.clf == "estimator:KNeighborsClassifier"
    assert json.loads((piped.run / "head.json").read_text())["file"] == "head.skops"
    with pytest.raises(UnknownHeadError, match="StandardScaler is not a scikit-learn classifier"):
        tlx.fit_head(cache, clf=StandardScaler(), out=tmp_path / "no")


def test_fit_head_cli_with_a_class_name(cli, cache, tmp_path):
    r = cli(
        "fit-head", "--features", cache, "--clf", "sklearn:GaussianNB", "--out", tmp_path / "nb", "--json", "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "nb" / "metrics.json").read_text())["clf"] == "sklearn:GaussianNB"
    r = cli("fit-head", "--features", cache, "--clf", "sklearn:GaussianNB", "--sweep", "--out", tmp_path / "s")
    assert r.exit_code == 2 and "sklearn:GaussianNB has no sweep grid" in r.stderr


# -- no import circles ------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            names.update("." * node.level + (node.module + "." if node.module else "") + a.name for a in node.names)
    return names


def test_registries_import_neither_their_heads_nor_their_backbones():
    assert not any("registry" in name for name in _imports(REPO / "heads" / "base.py"))
    for registry, members in [("heads", ("linear", "estimators", "base")), ("extractor", ("backbones",))]:
        found = _imports(REPO / registry / "registry.py")
        assert not any(name.lstrip(".").split(".")[0] in members for name in found), (registry, found)
