"""Run folders, metrics, the sweep, and the `fit-head` / `runs` commands end to end on tiny caches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, RUN_KEYS, make_folder_dataset, subprocess_env

from tlx.common.metrics import compute_metrics
from tlx.common.runfolder import list_runs, new_run_dir, write_metrics
from tlx.errors import RunError
from tlx.heads import Head, HeadSpec, load_run, split_indices
from tlx.heads.training.sweep import Selection, grouped_folds, run_sweep


def _extract(data: Path, cache: Path) -> Path:
    from tlx.extractor.extract import extract

    return Path(extract(data, backbone="tiny_cnn", cache_dir=cache, workers=0).path)


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caches")
    plain = make_folder_dataset(root / "plain", classes=("ants", "bees", "wasps"), per_class=6)
    split = root / "split"
    make_folder_dataset(split / "train", classes=("ants", "bees"), per_class=5)
    make_folder_dataset(split / "val", classes=("ants", "bees"), per_class=2, seed0=50)
    single = root / "single"  # the training split has one class only
    make_folder_dataset(single / "train", classes=("ants",), per_class=4)
    make_folder_dataset(single / "val", classes=("ants", "bees"), per_class=2, seed0=50)
    return {
        name: _extract(data, root / f"cache-{name}")
        for name, data in (("plain", plain), ("split", split), ("single", single))
    }


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv("TLX_RUNS_DIR", str(d))
    return d


# -- fit-head -------------------------------------------------------------------------------------
def test_fit_head_json_writes_a_complete_run(cli, caches, runs_dir):
    r = cli("fit-head", "--features", caches["plain"], "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert {"run", "clf", "val_accuracy", "fit_seconds", "params"} <= set(out) and out["clf"] == "linear"
    run = Path(out["run"])
    assert run.parent == runs_dir and run.name.endswith("-linear")
    assert {"head.json", "head.safetensors", "metrics.json", "confusion.png"} <= {p.name for p in run.iterdir()}
    info = json.loads((run / "metrics.json").read_text())
    assert set(info) >= RUN_KEYS
    assert {k: info["split"][k] for k in ("source", "val_fraction", "seed")} == {
        "source": "seeded",
        "val_fraction": 0.2,
        "seed": 0,
    }
    assert info["n_train"] + info["n_val"] == 18 and np.sum(info["confusion_matrix"]) == info["n_val"]

    # the saved head reproduces the reported accuracy on the same split
    import tlx

    loaded = load_run(run)
    assert loaded.kind == "head" and loaded.classes == ["ants", "bees", "wasps"] and loaded.space.backbone == "tiny_cnn"
    feats = tlx.load_features(caches["plain"])
    _, val, _ = split_indices(feats.paths, feats.y, feats.split, 0.2, 0, hashes=feats.sha256)
    assert info["split"]["val_sha256"] == sorted(feats.sha256[i] for i in val)
    assert np.mean(loaded.head.predict(feats.X[val]) == feats.y[val]) == pytest.approx(info["val_accuracy"])


def test_fit_head_sweep_on_data_split(cli, caches, runs_dir, tmp_path):
    out_dir = tmp_path / "my-run"
    r = cli(
        "fit-head",
        "--features",
        caches["split"],
        "--clf",
        "logreg",
        "--sweep",
        "--class-weight",
        "balanced",
        "--out",
        out_dir,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    info = json.loads((out_dir / "metrics.json").read_text())
    assert (out_dir / "sweep.png").is_file() and (out_dir / "head.safetensors").is_file()
    assert info["split"]["source"] == "data" and (info["n_train"], info["n_val"]) == (10, 4)
    sweep = info["sweep"]
    # chosen by cross-validation on the 10 training images, although the data has its own val split
    assert sweep["param"] == "C" and sweep["selection"] == "5-fold CV on train"
    assert info["selection"] == {"on": "cv", "folds": 5, "grouped_by": "content", "optimistic": False}
    assert len(sweep["scores"]) == len(sweep["grid"]) and info["cv_accuracy"] == max(sweep["scores"])
    assert sweep["best"] == sweep["grid"][int(np.argmax(sweep["scores"]))]
    assert info["params"]["C"] == sweep["best"] and info["params"]["class_weight"] == "balanced"


class _PeakHead(Head):
    """Fake head whose accuracy is 1 for k in GOOD and 0 otherwise."""

    name = "peak"
    GOOD = frozenset({3, 10})

    def __init__(self, k: int = 1):
        self.k = k

    def _fit(self, X, y):
        pass

    def _predict_proba(self, X):
        proba = np.zeros((len(X), len(self.classes_)))
        right = X[:, 0].astype(int) if self.k in self.GOOD else 1 - X[:, 0].astype(int)
        proba[np.arange(len(X)), right] = 1.0
        return proba


@pytest.mark.parametrize("on", ["val", "cv"])
def test_sweep_picks_the_best_value_first_on_ties(on):
    spec = HeadSpec("peak", _PeakHead, "k", (1, 3, 10, 30), "fake")
    y = np.tile([0, 1], 20)
    X = np.c_[y, np.zeros_like(y)].astype(np.float32)
    if on == "val":
        selection = Selection("val", X, y, X[:6], y[:6])
    else:
        hashes = [f"h{i}" for i in range(len(y))]
        selection = Selection("cv", X, y, folds=grouped_folds(y, hashes, None, 0, "--sweep", ["a", "b"]))
    record = run_sweep(spec, {}, selection)
    assert record["grid"] == [1, 3, 5, 10, 30]  # 3 -> 10 is more than half a decade: 5 comes between
    assert record["scores"] == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert record["best"] == 3  # the first best: the grid runs from strong to weak regularization
    assert record["selection"] == ("val, optimistic" if on == "val" else "5-fold CV on train")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clf", "nope"], "unknown head 'nope': expected one of linear"),
        (["--clf", "svm", "--param", "gama=1"], "svm has no parameter 'gama': valid keys are C,"),
        (["--clf", "svm", "--param", "C=big"], "--param C=big: svm expects a float"),
        (["--clf", "knn", "--class-weight", "balanced"], "knn has no class weights"),
        (["--val-fraction", "1.5"], "between 0 and 1"),
    ],
)
def test_fit_head_bad_options_exit_2(cli, caches, runs_dir, args, message):
    r = cli("fit-head", "--features", caches["plain"], *args)
    _assert_one_line_error(r, message)


@pytest.mark.parametrize("fraction", ["0", "1", "1.5", "-0.2"])
def test_val_fraction_out_of_range_is_refused_even_when_the_data_has_a_split(cli, caches, runs_dir, fraction):
    _assert_one_line_error(
        cli("fit-head", "--features", caches["split"], "--val-fraction", fraction),
        "--val-fraction must be between 0 and 1",
    )


def test_knn_with_more_neighbours_than_training_images_is_refused_in_one_line(cli, caches, runs_dir):
    # scikit-learn's KNeighborsClassifier refuses it (at predict time); tlx says so in one line.
    r = cli("fit-head", "--features", caches["plain"], "--clf", "knn", "--param", "n_neighbors=50")
    _assert_one_line_error(r, "knn could not predict: Expected n_neighbors <= n_samples_fit")


def test_fit_head_bad_inputs_exit_2(cli, caches, runs_dir, tmp_path):
    _assert_one_line_error(cli("fit-head", "--features", caches["single"]), "only class 'ants'")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    _assert_one_line_error(cli("fit-head", "--features", junk), "junk.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "someone else's"
    _assert_one_line_error(cli("fit-head", "--features", tmp_path / "other.h5"), "is not a tlx feature cache")
    _assert_one_line_error(
        cli("fit-head", "--features", tmp_path / "empty-dir-that-is-missing"), "no feature cache found"
    )
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    _assert_one_line_error(cli("fit-head", "--features", caches["plain"], "--out", taken), "not an empty folder")


def _assert_one_line_error(r, message: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlx: error: "), r.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout


# -- runs ----------------------------------------------------------------------------------------
def test_runs_lists_best_first(cli, caches, runs_dir):
    for clf in ("ridge", "knn"):
        assert cli("fit-head", "--features", caches["plain"], "--clf", clf, "--quiet").exit_code == 0
    (runs_dir / "not-a-run").mkdir()
    finetune = runs_dir / "ft"
    finetune.mkdir()
    write_metrics(
        finetune,
        {
            "kind": "finetune",
            "clf": "finetune",
            "params": {"epochs": 3},
            "val_accuracy": 2.0,
            "fit_seconds": 9.0,
            "feature_space": {"backbone": "tiny_cnn"},
            "dataset": "plain",
        },
    )
    r = cli("runs", "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()["runs"]
    assert next(row["clf"] for row in rows) == "finetune" and {row["clf"] for row in rows} == {
        "finetune",
        "ridge",
        "knn",
    }
    accs = [row["val_accuracy"] for row in rows]
    assert accs == sorted(accs, reverse=True)
    table = cli("runs", "--dir", runs_dir)
    assert (
        table.exit_code == 0 and "ridge" in table.stdout and "tiny_cnn" in table.stdout and "finetune" in table.stdout
    )
    assert [r["run"] for r in list_runs(runs_dir)] == [row["run"] for row in rows]


def _fake_run(folder: Path, **record) -> Path:
    folder.mkdir(parents=True)
    write_metrics(
        folder,
        {
            "kind": "head",
            "clf": "logreg",
            "params": {},
            "params_set": {},
            "feature_space": {"backbone": "tiny_cnn"},
            "fit_seconds": 0.1,
            **record,
        },
    )
    return folder


def test_runs_shows_dataset_and_n_val_and_filters_and_sorts(cli, tmp_path):
    root = tmp_path / "runs"
    _fake_run(
        root / "a-tiny",
        dataset="tiny",
        cache="/c/tiny-x.h5",
        val_accuracy=1.0,
        n_val=4,
        created="2025-01-01T00:00:00+00:00",
    )
    _fake_run(
        root / "b-big",
        dataset="big",
        cache="/c/big-x.h5",
        val_accuracy=0.9,
        n_val=400,
        created="2025-01-03T00:00:00+00:00",
    )
    _fake_run(
        root / "c-big",
        dataset="big",
        cache="/c/big-x.h5",
        val_accuracy=0.95,
        n_val=400,
        created="2025-01-02T00:00:00+00:00",
    )
    r = cli("runs", "--dir", root, "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()["runs"]
    # Ranked within each dataset, never 1.000 on 4 images above 0.95 on 400.
    assert [(row["dataset"], row["val_accuracy"], row["n_val"]) for row in rows] == [
        ("big", 0.95, 400),
        ("big", 0.9, 400),
        ("tiny", 1.0, 4),
    ]
    only = cli("runs", "--dir", root, "--dataset", "tiny", "--json").json()["runs"]
    assert [Path(row["run"]).name for row in only] == ["a-tiny"]
    by_cache = cli("runs", "--dir", root, "--dataset", "big-x.h5", "--json").json()["runs"]
    assert {Path(row["run"]).name for row in by_cache} == {"b-big", "c-big"}
    newest = cli("runs", "--dir", root, "--sort", "created", "--json").json()["runs"]
    assert [Path(row["run"]).name for row in newest] == ["b-big", "c-big", "a-tiny"]
    table = cli("runs", "--dir", root)
    header = table.stdout.splitlines()[0].split()
    assert "dataset" in header and "n_val" in header
    assert cli("runs", "--dir", root, "--sort", "nope").exit_code == 2


def test_runs_piped_output_keeps_long_paths_whole(cli, tmp_path):
    root = tmp_path / ("a-rather-long-folder-name-" * 4) / "runs"
    run = _fake_run(root / ("20250101-000000-logreg-" + "x" * 60), dataset="d" * 40, val_accuracy=0.5, n_val=10)
    r = cli("runs", "--dir", root)  # stdout is not a terminal here, as when piped
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(line for line in lines if str(run) in line)  # the whole path, on one line
    assert "d" * 40 in row and "…" not in r.stdout


def test_runs_shows_finetune_params_and_interrupted_runs(cli, tmp_path):
    root = tmp_path / "runs"
    _fake_run(
        root / "ft",
        kind="finetune",
        clf="finetune",
        val_accuracy=0.8,
        n_val=10,
        best_epoch=2,
        epochs_done=3,
        params={
            "data": "/d/birds",
            "unfreeze": "1",
            "epochs": 3,
            "lr": 0.0001,
            "optimizer": "adamw",
            "batch_size": 32,
            "weight_decay": 0.01,
            "seed": 0,
            "init_head": "",
        },
    )
    record = json.loads((root / "ft" / "metrics.json").read_text())
    record.pop("params_set")
    (root / "ft" / "metrics.json").write_text(json.dumps(record))
    (root / "killed" / "checkpoints").mkdir(parents=True)
    (root / "killed" / "checkpoints" / "last.pt").write_bytes(b"not read")
    rows = cli("runs", "--dir", root, "--json").json()["runs"]
    by_name = {Path(row["run"]).name: row for row in rows}
    assert by_name["ft"]["dataset"] == "birds" and by_name["ft"]["status"] == "done"
    assert by_name["ft"]["summary"] == "unfreeze=1, epochs=3, lr=0.0001, optimizer=adamw, batch_size=32, best epoch 2/3"
    assert by_name["killed"]["status"] == "interrupted" and by_name["killed"]["kind"] == "finetune"
    assert [Path(row["run"]).name for row in rows] == ["ft", "killed"]
    table = cli("runs", "--dir", root).stdout
    assert "interrupted" in next(line for line in table.splitlines() if "killed" in line)
    assert "unfreeze=1, epochs=3" in table and "--resume" in table


def test_version(cli):
    import tlx

    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"tlx {tlx.__version__}"


def test_runs_on_an_empty_folder(cli, tmp_path):
    r = cli("runs", "--dir", tmp_path / "none")
    assert r.exit_code == 0 and "no runs" in r.stdout


def test_load_run_refuses_folders_that_are_not_runs(tmp_path):
    with pytest.raises(RunError, match="is not a run folder: no such folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunError, match=r"has no metrics\.json"):
        load_run(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="not a tlx run record"):
        load_run(tmp_path)


def test_new_run_dir_is_unique(runs_dir, tmp_path):
    a, b = new_run_dir("linear"), new_run_dir("linear")
    assert a != b and a.is_dir() and b.is_dir() and a.parent == runs_dir
    assert new_run_dir("x", tmp_path / "fresh") == tmp_path / "fresh"


def test_compute_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1, 2])
    proba = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.1, 0.9, 0], [0.3, 0.6, 0.1], [0, 0, 1.0]])
    m = compute_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert m["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.9, 0.6, 1.0])))


# -- import hygiene ------------------------------------------------------------------------------
HEAVY = ("torch", "sklearn", "scipy", "skops", "matplotlib")


@pytest.mark.slow
def test_fit_head_linear_imports_no_heavy_module_and_sklearn_heads_are_sklearns(caches, tmp_path):
    """``fit-head --clf linear`` fits as from the shell without importing torch, scikit-learn,
    scipy, skops or matplotlib (each would cost from 0.5 s to seconds of start-up); a scikit-learn
    head imports scikit-learn and skops (it is scikit-learn's estimator, saved with skops), and
    not torch (skops is imported without its walk over scikit-learn, heads/io.py)."""
    code = (
        "import json, sys; from typer.testing import CliRunner; from tlx.cli.app import app\n"
        "runner, seen = CliRunner(), {}\n"
        "for clf in ('linear', 'svm'):\n"
        f"    r = runner.invoke(app, ['fit-head', '--clf', clf, '--features', {str(caches['plain'])!r}, "
        f"'--out', {str(tmp_path)!r} + '/' + clf, '-q'])\n"
        "    assert r.exit_code == 0, (clf, r.output)\n"
        f"    seen[clf] = sorted(m for m in {(*HEAVY, 'timm', 'torchvision')!r} if m in sys.modules)\n"
        "print(json.dumps(seen))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["linear"] == [], seen
    assert {"sklearn", "skops"} <= set(seen["svm"]) and "torch" not in seen["svm"], seen


@pytest.mark.slow
def test_runs_info_and_sklearn_heads_do_not_import_torch(caches, tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from tlx.cli.app import app\n"
        "runner = CliRunner()\n"
        f"r = runner.invoke(app, ['fit-head', '--clf', 'svm', '--features', {str(caches['plain'])!r}, "
        f"'--out', {str(tmp_path / 'run')!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = runner.invoke(app, ['runs', '--dir', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = runner.invoke(app, ['info', {str(caches['plain'])!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = runner.invoke(app, ['info', '--backbones'])\n"
        "assert r.exit_code == 0 and 'efficientnet_lite0' in r.output, r.output\n"
        "r = runner.invoke(app, ['heads'])\n"
        "assert r.exit_code == 0 and 'weight_decay' in r.output, r.output\n"
        "r = runner.invoke(app, ['--version'])\n"
        "assert r.exit_code == 0 and 'tlx' in r.output, r.output\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH"
