"""Engines for the frozen forward pass: same features as eager, refusal of a wrong one, the
artefact cache, `auto`'s choice and fallback, and the --engine option."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from conftest import make_folder_dataset

from tlx.extractor import engines as E

HAS = {name: not E.get_engine(name).unusable("cpu", "fp32") for name in E.ENGINES}
FAST = [name for name in E.AUTO_ORDER["cpu"] if name != "eager" and HAS[name]]  # auto's order


def needs(name: str):
    why = E.get_engine(name).unusable("cpu", "fp32")
    return pytest.mark.skipif(bool(why), reason=f"engine {name}: {why}")


@pytest.fixture(autouse=True)
def artefact_dir(tmp_path, monkeypatch):
    d = tmp_path / "engines"
    monkeypatch.setenv("TLX_ENGINE_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def tiny():
    from tlx.extractor.registry import get_backbone

    return get_backbone("tiny_cnn").build()


def images(n: int, size: int, seed: int = 0):
    import torch

    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def runner(net, engine: str, artefact_dir=None, **kw):
    from tlx.extractor.engine import FeatureRunner

    r = FeatureRunner(net, "avg", device="cpu", engine=engine, artefact_dir=artefact_dir, **kw)
    r.forward.plan(None)
    return r


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.own_process)])
def test_engine_gives_the_eager_features(tiny, engine, artefact_dir):
    if why := E.get_engine(engine).unusable("cpu", "fp32"):
        pytest.skip(f"engine {engine}: {why}")
    x = images(11, tiny.cfg.preprocessing.input_size)
    want = runner(tiny, "eager").forward_uint8(x)
    r = runner(tiny, engine, artefact_dir)
    got = np.concatenate([r.forward_uint8(x[:8]), r.forward_uint8(x[8:])])  # a full batch, then a smaller last one
    assert r.forward.report.engine == engine
    assert r.forward.report.max_abs_diff <= E.TOLERANCE
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= E.TOLERANCE
    assert not np.array_equal(got[0], got[1])  # real, distinct vectors


@pytest.mark.slow
def test_compile_gives_the_eager_features_and_is_compiled_once(tiny, artefact_dir, monkeypatch):
    """AOTInductor: any batch size from one package (no recompile, no padding), and a second
    run loads the package instead of compiling again."""
    import torch

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # inductor's cache then goes with the package
    x = images(11, tiny.cfg.preprocessing.input_size)
    want = runner(tiny, "eager").forward_uint8(x)
    first = runner(tiny, "compile", artefact_dir)
    got = np.concatenate([first.forward_uint8(x[:8]), first.forward_uint8(x[8:])])  # then a smaller batch
    assert first.forward.report.engine == "compile" and not first.forward.report.from_cache
    assert np.abs(got - want).max() <= E.TOLERANCE
    assert not np.array_equal(got[0], got[1])
    assert sorted(p.suffix or p.name for p in artefact_dir.iterdir()) == [".pt2", "inductor"]  # no temporary left

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again although the package is cached")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compile)
    second = runner(tiny, "compile", artefact_dir)
    again = np.concatenate([second.forward_uint8(x[:3]), second.forward_uint8(x[3:])])
    assert second.forward.report.from_cache
    assert np.abs(again - got).max() <= 1e-6


class Perturbed(E.Engine):
    """A deliberately wrong engine: eager plus an offset far beyond the tolerance."""

    name = "perturbed"

    def forward(self, x):
        return super().forward(x) + 1e-3


def test_a_wrong_engine_is_refused(tiny, monkeypatch):
    monkeypatch.setitem(E._ENGINES, "perturbed", Perturbed)
    monkeypatch.setattr(E, "CHOICES", (*E.CHOICES, "perturbed"))
    r = runner(tiny, "perturbed")
    with pytest.raises(E.EngineError, match=r"engine perturbed gives features up to 1\.00e-03 away from eager fp32"):
        r.forward_uint8(images(4, tiny.cfg.preprocessing.input_size))


def test_auto_skips_a_wrong_engine_and_says_so(tiny, monkeypatch):
    monkeypatch.setitem(E._ENGINES, "perturbed", Perturbed)
    monkeypatch.setitem(E.AUTO_ORDER, "cpu", ("perturbed", "eager"))
    monkeypatch.setitem(E.AUTO_MIN_IMAGES, "perturbed", (0, 0))
    notes = []
    r = runner(tiny, "auto", note=notes.append)
    x = images(4, tiny.cfg.preprocessing.input_size)
    got = r.forward_uint8(x)
    assert r.forward.report.engine == "eager"
    assert any("perturbed gives features" in n for n in notes)
    assert np.array_equal(got, runner(tiny, "eager").forward_uint8(x))


def test_auto_falls_back_when_the_optional_packages_are_missing(tiny, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a)
    )
    assert "onnxruntime is not installed (pip install 'tlx[fast]')" in E.get_engine("onnxruntime").unusable(
        "cpu", "fp32"
    )
    r = runner(tiny, "auto")
    assert r.forward.plan(100) == ["eager"]  # compile is there, but 100 images would not earn it back
    r.forward_uint8(images(2, tiny.cfg.preprocessing.input_size))
    assert r.forward.report.engine == "eager"
    with pytest.raises(E.EngineError, match="--engine openvino cannot run here: openvino is not installed"):
        runner(tiny, "openvino")


@pytest.mark.skipif(not FAST, reason="neither onnxruntime nor openvino is installed (pip install 'tlx[fast]')")
def test_auto_needs_enough_images_to_earn_the_export_back(tiny, artefact_dir):
    best = FAST[0]
    cold, warm = E.AUTO_MIN_IMAGES[best]
    r = runner(tiny, "auto", artefact_dir)
    assert r.forward.plan(cold - 1) == ["eager"]  # too few: no export
    assert r.forward.plan(cold)[0] == best
    r.forward_uint8(images(3, tiny.cfg.preprocessing.input_size))  # exports, so later runs find it
    assert r.forward.report.engine == best and not r.forward.report.from_cache
    again = runner(tiny, "auto", artefact_dir)
    assert again.forward.plan(warm)[0] == best  # cached now: fewer images earn the load back
    assert again.forward.plan(warm - 1) == ["eager"]


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.own_process)])
def test_the_artefact_is_reused_on_a_second_run(tiny, engine, artefact_dir, monkeypatch):
    if why := E.get_engine(engine).unusable("cpu", "fp32"):
        pytest.skip(f"engine {engine}: {why}")
    x = images(3, tiny.cfg.preprocessing.input_size)
    first = runner(tiny, engine, artefact_dir)
    a = first.forward_uint8(x)
    assert not first.forward.report.from_cache
    files = sorted(p.name for p in artefact_dir.iterdir())
    assert any(f.endswith(".onnx") for f in files)
    assert not any(f.startswith(".") for f in files)  # no temporary left behind

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the export is cached")

    monkeypatch.setattr(E, "export_onnx", no_export)
    second = runner(tiny, engine, artefact_dir)
    b = second.forward_uint8(x)
    assert second.forward.report.from_cache
    assert np.array_equal(a, b)
    assert sorted(p.name for p in artefact_dir.iterdir()) == files


def test_artefacts_are_keyed_by_what_makes_them(tmp_path):
    arts = E.Artefacts(tmp_path)
    spec = E.EngineSpec("tiny_cnn", "ab" * 32, "avg", 32)
    base = arts.path("onnxruntime", spec, ".onnx")
    assert base.parent == tmp_path and base.name.startswith("onnxruntime-tiny_cnn-avg-32-")
    others = [
        arts.path("openvino", spec, ".onnx"),
        arts.path("onnxruntime", E.EngineSpec("tiny_cnn", "cd" * 32, "avg", 32), ".onnx"),
        arts.path("onnxruntime", E.EngineSpec("tiny_cnn", "ab" * 32, "max", 32), ".onnx"),
        arts.path("onnxruntime", E.EngineSpec("tiny_cnn", "ab" * 32, "avg", 64), ".onnx"),
        arts.path("onnxruntime", spec, ".onnx", onnxruntime="0.0"),
    ]
    assert len({base, *others}) == len(others) + 1


def test_an_unknown_or_unusable_engine_is_refused_before_any_work(cli, folder_data, cache_dir):
    res = cli("extract", folder_data, "--backbone", "tiny_cnn", "--engine", "nope")
    assert res.exit_code == 2 and "nope" in res.stderr
    res = cli("extract", folder_data, "--backbone", "tiny_cnn", "--engine", "onnxruntime", "--precision", "bf16")
    assert res.exit_code == 2
    assert "--engine onnxruntime cannot run here: it runs in fp32 only, not --precision bf16" in res.stderr
    assert not cache_dir.exists()  # nothing was written


@needs("onnxruntime")
def test_caches_from_two_engines_interoperate(cli, tmp_path, monkeypatch):
    """The same data extracted with eager and with onnxruntime: one feature space, one cache
    name, vectors within the tolerance; the second engine's run reuses the first one's cache."""
    import h5py

    data = make_folder_dataset(tmp_path / "data", per_class=5)
    caches = {}
    for engine in ("eager", "onnxruntime"):
        cache = tmp_path / f"cache-{engine}"
        res = cli("extract", data, "--backbone", "tiny_cnn", "--engine", engine, "--cache-dir", cache, "--json")
        assert res.exit_code == 0, res.stderr
        out = res.json()
        assert out["engine"]["engine"] == engine
        caches[engine] = out["path"]
    assert caches["eager"].rsplit("/", 1)[1] == caches["onnxruntime"].rsplit("/", 1)[1]
    with h5py.File(caches["eager"]) as a, h5py.File(caches["onnxruntime"]) as b:
        assert list(a["paths"]) == list(b["paths"])
        diff = np.abs(a["features"][:] - b["features"][:]).max()
    assert 0 < diff <= E.TOLERANCE or diff == 0
    res = cli(
        "extract", data, "--backbone", "tiny_cnn", "--engine", "onnxruntime", "--cache-dir", tmp_path / "cache-eager"
    )
    assert res.exit_code == 0 and "0 new, 10 reused" in res.stdout


@needs("onnxruntime")
def test_predict_takes_an_engine(cli, folder_data, cache_dir, tmp_path):
    assert cli("extract", folder_data, "--backbone", "tiny_cnn").exit_code == 0
    run = tmp_path / "run"
    assert cli("fit-head", "--clf", "logreg", "--out", run).exit_code == 0
    new = make_folder_dataset(tmp_path / "new", per_class=2, seed0=50)
    res = cli("predict", new, "--run", run, "--engine", "onnxruntime", "--json")
    assert res.exit_code == 0, res.stderr
    out = res.json()
    assert out["n_computed"] == 4 and out["engine"]["engine"] == "onnxruntime"
    assert out["engine"]["max_abs_diff"] <= E.TOLERANCE


@pytest.mark.real_weights
@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.own_process)])
def test_real_lite0_features_match_eager(hymenoptera, engine, artefact_dir):
    if why := E.get_engine(engine).unusable("cpu", "fp32"):
        pytest.skip(f"engine {engine}: {why}")
    from tlx.extractor.discovery import discover
    from tlx.extractor.preprocess import ResizeCrop
    from tlx.extractor.registry import get_backbone

    net = get_backbone("efficientnet_lite0").build()
    index = discover(hymenoptera)
    rc = ResizeCrop(net.cfg.preprocessing)
    import torch

    x = torch.stack([rc.load(index.abspath(it)) for it in index.items[::40]])  # 10 real photos
    want = runner(net, "eager").forward_uint8(x)
    got = runner(net, engine, artefact_dir).forward_uint8(x)
    assert np.abs(got - want).max() <= E.TOLERANCE
    assert np.abs(want).max() > 1  # real features, not zeros
