"""``tlx export``: the exported module (TorchScript and ONNX) gives ``tlx predict``'s
probabilities, the sidecar describes its input and output, and heads without a linear form
are refused. All on the 32 px ``tiny_cnn`` backbone."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_dataset

CLASSES = ("cats", "dogs", "owls")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tlx.extractor.extract import extract
    from tlx.heads.training.fit import fit_head

    root = tmp_path_factory.mktemp("export")
    data = make_folder_dataset(root / "data", CLASSES, per_class=8, seed0=7)
    cache = extract(data, backbone="tiny_cnn", cache_dir=root / "cache", workers=0).path

    class Runs(dict):
        """Run folders by head name, each fitted on first use."""

        def __missing__(self, clf):
            self[clf] = fit_head(cache, clf=clf, out=root / clf).run
            return self[clf]

    runs = Runs(root=root, data=data)
    return runs


def _heads(exportable: bool) -> list[str]:
    from tlx.heads import get_head, list_heads

    return [name for name in list_heads() if get_head(name).exportable == exportable]


def _run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["images"]
        return sess.run(["probabilities"], {"images": x})[0]
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _preprocessed(paths, sidecar: dict) -> np.ndarray:
    from tlx.cache.space import Preprocessing
    from tlx.extractor.preprocess import preprocess_image

    pre = Preprocessing.from_dict(sidecar["preprocessing"])
    return np.stack([preprocess_image(p, pre).numpy() for p in paths]).astype(np.float32)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("clf", _heads(exportable=True))
def test_exported_module_gives_the_probabilities_of_predict(cli, runs, tmp_path, fmt, clf):
    out = tmp_path / f"model.{fmt}"
    r = cli("export", "--run", runs[clf], "--format", fmt, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    result = r.json()
    assert result["path"] == str(out) and out.is_file()
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] <= 1e-4

    sidecar = json.loads(Path(result["sidecar"]).read_text())
    assert sidecar["classes"] == list(CLASSES) and sidecar["input"]["shape"] == ["N", 3, 32, 32]
    assert sidecar["preprocessing"]["resize_size"] == 36 and sidecar["format"] == fmt

    # A batch size other than the one traced with: the batch axis is dynamic.
    files = sorted(runs["data"].rglob("*.png"))[::5]
    assert len(files) == 5
    got = _run_exported(out, fmt, _preprocessed(files, sidecar))

    from tlx.heads.runs import load_run
    from tlx.inference.predict import predict_paths

    preds = predict_paths(load_run(runs[clf]), files, workers=0)  # features from the cache
    assert preds.n_reused == len(files)
    np.testing.assert_allclose(got, preds.proba, atol=1e-4)
    assert not np.allclose(preds.proba, preds.proba[:1])  # not a constant output


def test_default_out_is_inside_the_run_folder(cli, runs):
    r = cli("export", "--run", runs["linear"], "--format", "torchscript", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert (runs["linear"] / "model.pt").is_file() and (runs["linear"] / "model.pt.json").is_file()


def test_a_finetuning_run_exports_its_network(cli, tmp_path):
    import torch

    from tlx.extractor.preprocess import preprocess_image
    from tlx.finetune.model import load_finetuned
    from tlx.finetune.train import finetune

    data = make_folder_dataset(tmp_path / "data", ("a", "b"), per_class=5)
    finetune(data, backbone="tiny_cnn", epochs=1, batch_size=4, workers=0, device="cpu", out=tmp_path / "ft")
    r = cli("export", "--run", tmp_path / "ft", "--format", "onnx", "--out", tmp_path / "ft.onnx", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["kind"] == "finetune"
    module, pre = load_finetuned(tmp_path / "ft")
    files = sorted(data.rglob("*.png"))[:3]
    x = torch.stack([preprocess_image(p, pre) for p in files])
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(_run_exported(tmp_path / "ft.onnx", "onnx", x.numpy()), want, atol=1e-4)


def test_the_registry_has_exportable_and_non_exportable_heads():
    assert _heads(exportable=True) == ["linear", "logreg", "ridge"] and {"knn", "svm", "rf", "mlp"} <= set(
        _heads(exportable=False)
    )


@pytest.mark.parametrize("clf", _heads(exportable=False))
def test_a_head_without_linear_form_is_not_exportable(cli, runs, tmp_path, clf):
    r = cli("export", "--run", runs[clf], "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert r.exit_code == 2
    assert "not exportable" in r.stderr and clf in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.json").exists()


def test_a_linear_head_with_l2_normalization_is_not_exportable(cli, runs, tmp_path):
    from tlx.cache.features import resolve_cache
    from tlx.heads.training.fit import fit_head

    run = fit_head(resolve_cache(runs["root"] / "cache"), clf="linear", params=["l2norm=true"], out=tmp_path / "l2").run
    r = cli("export", "--run", run, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert r.exit_code == 2 and "not exportable" in r.stderr and "l2norm" in r.stderr


def test_bad_run_and_bad_format_exit_2(cli, runs, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("export", "--run", tmp_path / "empty", "--format", "onnx")
    assert r.exit_code == 2 and "not a run folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("export", "--run", runs["linear"], "--format", "tflite")
    assert r.exit_code == 2 and "tflite" in r.stderr


def test_a_non_exportable_head_is_refused_before_torch_is_imported(runs, tmp_path):
    # knn is saved with skops; tlx imports skops.io without its walk over scikit-learn, which
    # would import torch (heads/io.py, skops_io).
    import subprocess
    import sys

    from conftest import REPO, subprocess_env

    code = (
        "import sys; from typer.testing import CliRunner; from tlx.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['export', '--run', {str(runs['knn'])!r}, "
        f"'--out', {str(tmp_path / 'm.onnx')!r}])\n"
        "assert r.exit_code == 2 and 'not exportable' in r.output, r.output\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH"
