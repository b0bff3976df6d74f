"""Head parameters: out-of-range values refused in tlx's words before any data is read, --param
against --sweep, and the listing of heads (``tlx heads``, ``describe_heads``)."""

from __future__ import annotations

import numpy as np
import pytest

from tlx.heads import HeadError, ParamError, get_head, list_heads

HEADS = list(list_heads())

BAD = [
    ("linear", "weight_decay=-1"),
    ("linear", "max_iter=0"),
    ("linear", "tol=0"),
    ("logreg", "C=-1"),
    ("logreg", "max_iter=-1"),
    ("svm", "C=-1"),
    ("svm", "kernel=nope"),
    ("svm", "gamma=-2"),
    ("knn", "n_neighbors=0"),
    ("knn", "metric=nope"),
    ("ridge", "alpha=-5"),
    ("rf", "n_estimators=0"),
    ("rf", "min_samples_leaf=0"),
    ("mlp", "alpha=-5"),
    ("mlp", "max_iter=0"),
    ("rf", "max_features=0"),
    ("rf", "max_features=1.5"),
    ("logreg", "class_weight=heavy"),
    ("sklearn:HistGradientBoostingClassifier", "learning_rate=-1"),
]
BAD = list(
    dict.fromkeys(BAD + [(name, f"{get_head(name).main_param}=-1") for name in HEADS])
)  # and every head's main parameter


def _one_line_error(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlx: error: ") and "Traceback" not in r.stderr + r.stdout, r.stderr
    return lines[0]


@pytest.mark.parametrize("clf, param", BAD)
def test_out_of_range_params_exit_2_before_any_data_is_read(cli, tmp_path, clf, param):
    # The cache does not exist: the parameter must be refused first, in tlx's words.
    line = _one_line_error(cli("fit-head", "--features", tmp_path / "no-cache.h5", "--clf", clf, "--param", param))
    key = param.partition("=")[0]
    assert f"--param {key}=" in line, line
    assert f"{clf} needs {key} to be" in line or f"The '{key}' parameter of" in line, line
    assert "cross_val_predict" not in line and "no-cache" not in line


@pytest.mark.parametrize("clf, param", [("svm", "C=-1"), ("linear", "weight_decay=-1"), ("knn", "n_neighbors=0")])
def test_fit_refuses_out_of_range_params_through_the_api_too(clf, param):
    key, _, value = param.partition("=")
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises((ParamError, HeadError), match=f"{clf} needs {key} to be|The '{key}' parameter of"):
        get_head(clf).build(**{key: type(get_head(clf).defaults()[key])(value)}).fit(X, np.arange(20) % 2)


def test_valid_values_pass(cli, tmp_path):
    from tlx.heads.registry import parse_params, validate_params

    for clf, params in [
        ("svm", ["gamma=0.5", "kernel=linear"]),
        ("rf", ["max_features=0.5"]),
        ("knn", ["n_neighbors=1"]),
    ]:
        validate_params(get_head(clf), parse_params(get_head(clf), params))
    assert parse_params(get_head("rf"), ["max_features=0.5"]) == {"max_features": 0.5}


def test_param_and_sweep_on_the_same_key_is_refused(cli, tmp_path):
    line = _one_line_error(
        cli("fit-head", "--features", tmp_path / "no-cache.h5", "--clf", "logreg", "--param", "C=0.1", "--sweep")
    )
    assert "--param C=0.1 and --sweep both set C" in line


def test_describe_heads_lists_every_head_with_its_parameters():
    from tlx.heads.registry import describe_heads

    rows = {row["name"]: row for row in describe_heads()}
    assert set(rows) == set(HEADS) and [n for n, r in rows.items() if r["default"]] == ["linear"]
    for name, row in rows.items():
        spec = get_head(name)
        assert row["sweep_param"] == spec.main_param and row["sweep_grid"] == list(spec.grid)
        assert {p["name"] for p in row["params"]} == set(spec.defaults())
        main = next(p for p in row["params"] if p["name"] == spec.main_param)
        assert main["valid"], (name, main)  # every main parameter has a stated range
    assert (
        rows["linear"]["exportable"]
        and rows["logreg"]["exportable"]
        and not rows["svm"]["exportable"]
        and not rows["knn"]["class_weight"]
    )
    kernel = next(p for p in rows["svm"]["params"] if p["name"] == "kernel")
    assert kernel["default"] == "rbf" and "'linear'" in kernel["valid"] and "nope" not in kernel["valid"]


def test_heads_command(cli):
    r = cli("heads")
    assert r.exit_code == 0, r.stderr
    for name in HEADS:
        assert f"\n{name}: " in "\n" + r.stdout
    assert "--sweep searches C over 0.0001, 0.000316228, 0.001" in r.stdout and "--param n_neighbors=5" in r.stdout
    assert "sklearn:<name>: any scikit-learn classifier" in r.stdout
    j = cli("heads", "--json")
    assert [row["name"] for row in j.json()] == HEADS
