"""``extract()``: the HDF5 cache, incremental re-runs, bad images, kill -9 and concurrent runs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (
    backdate,
    broken_files,
    h5_files,
    make_folder_dataset,
    start_stopping_at_first_part,
    subprocess_env,
    wait_for_stop,
    write_image,
)

import tlx
from tlx.errors import CacheError
from tlx.extractor.extract import ExtractionFailed, extract

TINY = dict(backbone="tiny_cnn", workers=0, batch_size=4)


def run(data, cache, **kw):
    return extract(data, cache_dir=cache, **{**TINY, **kw})


def features_by_path(path) -> dict[str, np.ndarray]:
    f = tlx.load_features(path)
    return dict(zip(f.paths, f.X, strict=False))


def stat_key(path) -> tuple:
    """Same file, same bytes (an unchanged re-run only touches its time: see test_newest_cache_*)."""
    st = os.stat(path)
    return st.st_ino, st.st_size, Path(path).read_bytes()


# --------------------------------------------------------------------------- the cache file


def test_first_run_writes_one_valid_cache(folder_data, tmp_path):
    cache = tmp_path / "cache"
    res = run(folder_data, cache)
    assert (res.n_images, res.n_new, res.n_reused, res.n_removed, res.n_failed) == (6, 6, 0, 0, 0)
    assert res.feature_dim == 32 and res.backbone == "tiny_cnn" and res.written
    assert h5_files(cache) == [Path(res.path)]
    assert not Path(res.path + ".journal").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    feats = tlx.load_features(res.path)
    assert feats.X.shape == (6, 32) and feats.X.dtype == np.float32 and np.isfinite(feats.X).all()
    assert feats.y.dtype == np.int64 and feats.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert feats.classes == ["ants", "bees"]
    assert feats.paths[0] == "ants/ants_0.png" and feats.split == [""] * 6
    assert len(np.unique(feats.X.round(5), axis=0)) == 6  # six different images, six different vectors


def test_hdf5_layout_follows_the_h5py_advice(folder_data, tmp_path):
    import torch

    res = run(folder_data, tmp_path / "cache", pooling="avgmax")
    with h5py.File(res.path, "r") as f:
        ds = f["features"]  # the index stitches the parts into one array
        assert ds.dtype == np.float32 and ds.shape == (6, 64) and ds.is_virtual
        [part] = [Path(res.path + ".parts") / n for n in f["parts/names"].asstr()[()]]
        with h5py.File(part, "r") as p:  # the vectors themselves: chunked, resizable
            assert p["features"].chunks[1] == 64 and p["features"].maxshape == (None, 64)
            np.testing.assert_array_equal(p["features"][()], ds[()])
        for name in ("paths", "split", "content_sha256", "classes", "failed/paths", "failed/reasons"):
            assert h5py.check_string_dtype(f[name].dtype) is not None, name
            assert f[name].maxshape == (None,), name
        assert f["labels"].dtype == np.int64 and f["labels"].maxshape == (None,)
        assert [len(h) for h in f["content_sha256"].asstr()[()]] == [64] * 6
        attrs = dict(f.attrs)
    assert attrs["backbone"] == "tiny_cnn" and attrs["pooling"] == "avgmax"
    assert attrs["tlx_version"] == tlx.__version__ and attrs["torch_version"] == str(torch.__version__)
    assert len(attrs["weights_sha256"]) == 64
    assert json.loads(attrs["preprocessing"])["input_size"] == 32
    space = json.loads(attrs["feature_space"])
    assert space["feature_dim"] == 64 and space["pooling"] == "avgmax"
    assert attrs["n_images"] == 6 and attrs["feature_dim"] == 64
    assert attrs["dataset_root"] == str(folder_data.resolve()) and attrs["created"] and attrs["updated"]


@pytest.mark.parametrize("width", [32, 512, 1280, 2560, 4096])
def test_chunks_are_10kib_to_1mib(width):
    from tlx.cache.h5format import rows_per_chunk

    assert 10 * 1024 <= rows_per_chunk(width) * width * 4 <= 1024 * 1024


def test_load_features_split(tmp_path):
    data = tmp_path / "hym"
    make_folder_dataset(data / "train", per_class=2)
    make_folder_dataset(data / "val", per_class=1, seed0=20)
    res = run(data, tmp_path / "cache")
    val = tlx.load_features(res.path, split="val")
    assert val.X.shape == (2, 32) and val.X.dtype == np.float32
    assert val.y.dtype == np.int64 and val.y.tolist() == [0, 1]
    assert val.split == ["val", "val"] and all(p.startswith("val/") for p in val.paths)
    assert val.classes == ["ants", "bees"]
    assert len(tlx.load_features(res.path, split="train")) == 4
    with pytest.raises(CacheError, match="no split 'test'"):
        tlx.load_features(res.path, split="test")


def test_load_features_finds_the_newest_cache_in_a_folder(folder_data, cache_dir):
    run(folder_data, None)  # TLX_CACHE_DIR
    newer = run(folder_data, None, pooling="max")
    os.utime(newer.path, (time.time() + 5, time.time() + 5))
    assert tlx.load_features().path == Path(newer.path)
    assert tlx.load_features(cache_dir).space.pooling == "max"


def test_load_features_on_a_non_cache(tmp_path):
    bogus = tmp_path / "x.h5"
    bogus.write_bytes(b"not hdf5 at all")
    with pytest.raises(CacheError):
        tlx.load_features(bogus)
    with pytest.raises(CacheError, match="no feature cache"):
        tlx.load_features(tmp_path / "empty-folder")


# --------------------------------------------------------------------------- incremental


def test_second_run_reuses_everything_and_does_not_rewrite(folder_data, tmp_path):
    backdate(folder_data)  # older than the racy window: nothing is re-read, so nothing is written
    cache = tmp_path / "cache"
    first = run(folder_data, cache)
    before = stat_key(first.path)
    second = run(folder_data, cache)
    assert (second.n_new, second.n_reused, second.n_removed, second.n_resumed) == (0, 6, 0, 0)
    assert not second.written and stat_key(second.path) == before
    assert second.path == first.path


def test_add_change_delete(folder_data, tmp_path):
    cache = tmp_path / "cache"
    first = run(folder_data, cache)
    old = features_by_path(first.path)

    write_image(folder_data / "bees" / "new.png", seed=99)
    added = run(folder_data, cache)
    assert (added.n_images, added.n_new, added.n_reused) == (7, 1, 6)

    write_image(folder_data / "ants" / "ants_1.png", seed=77)  # same name, other bytes
    changed = run(folder_data, cache)
    assert (changed.n_images, changed.n_new, changed.n_reused) == (7, 1, 6)
    now = features_by_path(changed.path)
    assert not np.allclose(now["ants/ants_1.png"], old["ants/ants_1.png"])
    assert np.array_equal(now["ants/ants_0.png"], old["ants/ants_0.png"])

    (folder_data / "bees" / "bees_2.png").unlink()
    removed = run(folder_data, cache)
    assert (removed.n_images, removed.n_new, removed.n_reused, removed.n_removed) == (6, 0, 6, 1)
    assert "bees/bees_2.png" not in features_by_path(removed.path)

    # and the incremental result equals a fresh run from scratch
    fresh = run(folder_data, tmp_path / "fresh")
    a, b = tlx.load_features(removed.path), tlx.load_features(fresh.path)
    assert a.paths == b.paths and a.y.tolist() == b.y.tolist() and a.sha256 == b.sha256
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


def test_moving_an_image_to_another_class_relabels_it(folder_data, tmp_path):
    cache = tmp_path / "cache"
    run(folder_data, cache)
    (folder_data / "ants" / "ants_0.png").rename(folder_data / "bees" / "ants_0.png")
    res = run(folder_data, cache)
    assert (res.n_new, res.n_reused, res.n_removed) == (0, 6, 1)
    feats = tlx.load_features(res.path)
    assert feats.y[feats.paths.index("bees/ants_0.png")] == feats.classes.index("bees")


def test_other_feature_spaces_get_their_own_file(folder_data, tmp_path):
    cache = tmp_path / "cache"
    base = run(folder_data, cache)
    before = stat_key(base.path)
    pooled = run(folder_data, cache, pooling="max")
    assert pooled.path != base.path and pooled.n_new == 6 and pooled.n_reused == 0

    import torch

    from tlx.extractor.registry import get_backbone

    state = tmp_path / "other.pth"
    net = get_backbone("tiny_cnn").build()
    torch.save({k: v + 0.01 for k, v in net.body.state_dict().items()}, state)
    other = run(folder_data, cache, weights=state)
    assert other.path not in (base.path, pooled.path) and other.n_new == 6
    assert len(h5_files(cache)) == 3 and stat_key(base.path) == before
    assert not np.allclose(tlx.load_features(other.path).X, tlx.load_features(base.path).X)


def test_a_foreign_space_in_the_cache_file_is_refused(folder_data, tmp_path):
    cache = tmp_path / "cache"
    base = run(folder_data, cache)
    maxed = run(folder_data, tmp_path / "elsewhere", pooling="max")
    os.replace(maxed.path, base.path)  # someone copies another space's file over this name
    with pytest.raises(CacheError, match="another feature space"):
        run(folder_data, cache)


def test_half_written_caches_of_killed_runs_are_removed(folder_data, tmp_path):
    cache = tmp_path / "cache"
    base = run(folder_data, cache)
    stale = Path(base.path).with_name(f".{Path(base.path).name}.99999.tmp")
    stale.write_bytes(b"half an HDF5 file")
    run(folder_data, cache)
    assert not stale.exists() and h5_files(cache) == [Path(base.path)]


def test_a_corrupt_cache_is_rebuilt(folder_data, tmp_path):
    cache = tmp_path / "cache"
    base = run(folder_data, cache)
    Path(base.path).write_bytes(b"garbage")
    res = run(folder_data, cache)
    # the index is lost, but the parts it pointed to are complete: their vectors are taken back
    assert (res.n_new, res.n_resumed) == (0, 6) and len(tlx.load_features(res.path)) == 6
    shutil.rmtree(res.path + ".parts")  # and with the parts gone too, everything is extracted again
    again = run(folder_data, cache)
    assert again.n_new == 6 and len(tlx.load_features(again.path)) == 6


# --------------------------------------------------------------------------- bad images


def test_broken_images_are_skipped_reported_and_recorded(folder_data, tmp_path):
    expected = broken_files(folder_data / "bees")
    backdate(folder_data)  # past the racy window, so the re-run re-reads nothing
    cache = tmp_path / "cache"
    res = run(folder_data, cache, workers=1)  # decoding in a worker process, as by default
    assert res.n_images == 6 and res.n_failed == len(expected) == 5
    reasons = {f["path"]: f["reason"] for f in res.failed}
    assert set(reasons) == {f"bees/{n}" for n in expected}
    for name, words in expected.items():
        assert words in reasons[f"bees/{name}"]
    with h5py.File(res.path, "r") as f:
        recorded = dict(zip(f["failed/paths"].asstr()[()], f["failed/reasons"].asstr()[()], strict=False))
    assert recorded == reasons
    assert set(tlx.load_features(res.path).paths).isdisjoint(reasons)

    again = run(folder_data, cache)
    assert (again.n_reused, again.n_failed, again.n_new) == (6, 5, 0)
    assert not again.written  # known failures alone do not rewrite the cache


def test_strict_fails_and_writes_nothing(folder_data, tmp_path):
    broken_files(folder_data / "ants")
    with pytest.raises(ExtractionFailed) as err:
        run(folder_data, tmp_path / "cache", strict=True)
    assert err.value.exit_code == 1
    assert h5_files(tmp_path / "cache") == []


# --------------------------------------------------------------------------- kill -9 and concurrency


def _cli(data, cache, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tlx",
        "extract",
        str(data),
        "--backbone",
        "tiny_cnn",
        "--workers",
        "0",
        "--cache-dir",
        str(cache),
        "--json",
        *extra,
    ]


def _many_images(root: Path, n: int, size=(192, 160)) -> None:
    for i in range(n):
        write_image(
            root / ("ants" if i % 2 else "bees") / f"img_{i:04d}.jpg", seed=i, size=size, fmt="JPEG", quality=90
        )


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path):
    data, cache, fresh = tmp_path / "data", tmp_path / "cache", tmp_path / "fresh"
    _many_images(data, 20)
    complete = run(data, cache)  # a complete cache of the first 20 images
    _many_images(data, 240)  # the same 20 again (same bytes) and 220 more

    parts = Path(complete.path + ".parts")
    before = set(parts.iterdir())
    env = {**subprocess_env(), "TLX_FLUSH_ROWS": "8", "TLX_FLUSH_SECONDS": "1000"}  # a part every 8 vectors
    args = _cli(data, cache, "--batch-size", "8")[3:]  # the tlx arguments, after `python -m tlx`
    proc, read = start_stopping_at_first_part(args, env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = wait_for_stop(read)  # it flushed its first new part and waits there to be killed
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert stopped and proc.returncode == -signal.SIGKILL, err

    # the complete cache from before is untouched and valid
    assert h5_files(cache) == [Path(complete.path)]
    assert len(tlx.load_features(complete.path)) == 20
    assert set(parts.glob("*.h5")) - before  # flushed parts that no index references yet

    resumed = run(data, cache, batch_size=8)
    assert resumed.n_images == 240 and resumed.n_reused == 20
    assert resumed.n_resumed >= 8 and resumed.n_resumed % 8 == 0  # whole flushed parts
    assert resumed.n_resumed + resumed.n_new == 220
    assert not list(parts.glob(".*.tmp"))

    uninterrupted = run(data, fresh, batch_size=8)
    a, b = tlx.load_features(resumed.path), tlx.load_features(uninterrupted.path)
    assert a.paths == b.paths and a.y.tolist() == b.y.tolist()
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


@pytest.mark.slow
def test_two_concurrent_extracts(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    _many_images(data, 60, size=(96, 80))
    procs = [
        subprocess.Popen(
            _cli(data, cache),
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert {r["path"] for r in results} == {str(h5_files(cache)[0])}
    feats = tlx.load_features(results[0]["path"])
    assert len(feats) == 60 and np.isfinite(feats.X).all()
    # one did the work; the other waited for it (its stderr says so) or came after it, and
    # reused everything instead of extracting again or overwriting
    assert sorted((r["n_new"], r["n_reused"]) for r in results) == [(0, 60), (60, 0)]
    reuser = next(i for i, r in enumerate(results) if r["n_reused"] == 60)
    assert "waiting" not in outs[1 - reuser][1]  # the one that worked never waited
    assert not list(cache.glob("*.journal")) and not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_cuda_matches_cpu(folder_data, tmp_path, precision, atol):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    cpu = run(folder_data, tmp_path / "cpu", device="cpu")
    gpu = run(folder_data, tmp_path / "gpu", device="cuda", precision=precision, workers=1)
    np.testing.assert_allclose(tlx.load_features(gpu.path).X, tlx.load_features(cpu.path).X, atol=atol)


# --------------------------------------------------------------------------- no-op re-runs, newest cache


@pytest.fixture
def builds(monkeypatch):
    """Counts how often the tiny_cnn builder runs (the registry looks builders up by name)."""
    from tlx.extractor import registry

    registry.list_backbones()  # make sure the builtins are registered before patching
    real = registry._BACKBONES["tiny_cnn"]
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real.builder(*args, **kwargs)

    monkeypatch.setitem(registry._BACKBONES, "tiny_cnn", dataclasses.replace(real, builder=counting))
    return calls


def test_unchanged_rerun_does_not_build_the_network(folder_data, tmp_path, builds):
    cache = tmp_path / "cache"
    expected = broken_files(folder_data / "bees")  # known failures are confirmed without the network
    backdate(folder_data)
    first = run(folder_data, cache)
    assert len(builds) == 1
    again = run(folder_data, cache)
    assert len(builds) == 1, "an unchanged re-run built the network"
    assert (again.path, again.n_reused, again.n_new, again.written) == (first.path, 6, 0, False)
    assert again.failed == first.failed and again.n_failed == len(expected)

    write_image(folder_data / "ants" / "new.png", seed=50)
    added = run(folder_data, cache)
    assert len(builds) == 2 and (added.n_new, added.n_reused) == (1, 6)


@pytest.mark.parametrize("change", ["weights", "pool"])
def test_a_different_request_builds_the_network(folder_data, tmp_path, builds, change):
    import torch

    cache = tmp_path / "cache"
    run(folder_data, cache)
    if change == "weights":
        path = tmp_path / "w.pth"
        net = get_backbone_for_test()
        torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in net.body.state_dict().items()}, path)
        res = run(folder_data, cache, weights=path)
    else:
        res = run(folder_data, cache, pooling="max")
    assert len(builds) == 3 if change == "weights" else len(builds) == 2
    assert res.n_new == 6 and res.written


def get_backbone_for_test():
    from tlx.extractor.registry import get_backbone

    return get_backbone("tiny_cnn").build()


def test_a_no_op_extract_changes_no_file_and_the_cache_is_chosen_unambiguously(tmp_path, cache_dir, monkeypatch):
    first = make_folder_dataset(tmp_path / "first")
    second = make_folder_dataset(tmp_path / "second", seed0=20)
    backdate(first)
    a = run(first, None)
    run(second, None)
    before = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.h5")}
    again = run(first, None)
    assert not again.written and again.path == a.path
    assert {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.h5")} == before  # a no-op writes nothing
    with pytest.raises(CacheError, match=r"2 datasets \(first: .*; second: .*\): pass --features FILE"):
        tlx.load_features()  # two datasets, and the working folder names neither: no guess
    monkeypatch.chdir(first)  # working in the dataset's own folder picks its cache
    assert tlx.load_features().path == Path(a.path)


# --------------------------------------------------------------------------- --strict, --device, damaged caches


def test_strict_reports_every_failure(folder_data, tmp_path):
    expected = broken_files(folder_data / "ants")  # a dangling link (hashing) and undecodable files
    messages = []
    reporter = tlx_reporter(messages)
    with pytest.raises(ExtractionFailed) as err:
        run(folder_data, tmp_path / "cache", strict=True, reporter=reporter)
    assert set(err.value.failures) == {f"ants/{n}" for n in expected}
    for name in expected:
        assert f"ants/{name}" in str(err.value)
        assert any(m.startswith(f"cannot read ants/{name}: ") for m in messages), messages


def tlx_reporter(messages: list):
    from tlx.common.progress import Reporter

    class Collect(Reporter):
        def message(self, text: str) -> None:
            messages.append(text)

    return Collect()


def test_a_truncated_cache_is_rebuilt_with_a_consistent_warning(folder_data, tmp_path):
    cache = tmp_path / "cache"
    base = run(folder_data, cache)
    data = Path(base.path).read_bytes()
    Path(base.path).write_bytes(data[: len(data) // 2])
    messages = []
    res = run(folder_data, cache, reporter=tlx_reporter(messages))
    assert res.n_resumed == 6 and len(tlx.load_features(res.path)) == 6
    [warning] = [m for m in messages if m.startswith("warning:")]
    assert "extracting the rest" in warning and "delete it" not in warning


def test_device_is_checked_before_any_work(tmp_path, monkeypatch):
    import torch

    from tlx.common.device import check_device
    from tlx.errors import TlxError
    from tlx.extractor.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TlxError, match="--device cuda") as err:
        extract(tmp_path / "no-such-data", backbone="tiny_cnn", device="cuda", cache_dir=tmp_path / "cache")
    with pytest.raises(TlxError) as direct:
        check_device("cuda")
    with pytest.raises(TlxError) as resolved:
        resolve_device("cuda")
    assert str(err.value) == str(direct.value) == str(resolved.value)
    assert not (tmp_path / "cache").exists()


def test_ignored_entries_are_reported(tmp_path):
    data = make_folder_dataset(tmp_path / "d" / "train")
    make_folder_dataset(tmp_path / "d" / "val", per_class=1, seed0=10)
    write_image(tmp_path / "d" / "test" / "unlabeled1.jpg", seed=60, fmt="JPEG")
    messages = []
    res = run(data.parent, tmp_path / "cache", reporter=tlx_reporter(messages))
    assert tlx.load_features(res.path).classes == ["ants", "bees"]
    assert any("test/" in note for note in res.ignored)
    assert any(m.startswith("note: ignored test/") for m in messages), messages


def test_load_features_has_the_failures(folder_data, tmp_path):
    expected = broken_files(folder_data / "bees")
    res = run(folder_data, tmp_path / "cache")
    feats = tlx.load_features(res.path)
    assert set(feats.failed) == {f"bees/{n}" for n in expected}
    for name, words in expected.items():
        assert words in feats.failed[f"bees/{name}"]
    assert feats.subset(np.arange(2)).failed == feats.failed


def test_an_unknown_option_is_refused_like_an_unknown_keyword(tmp_path):
    with pytest.raises(TypeError, match=r"unknown option.*pool\b.*the options are backbone, weights, pooling"):
        extract(tmp_path, backbone="tiny_cnn", pool="max", cache_dir=tmp_path / "cache")
    with pytest.raises(TypeError, match="positional"):  # options are keywords: no reporter taken for a backbone
        extract(tmp_path, "tiny_cnn", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_options_not_given_take_their_defaults(folder_data, tmp_path, monkeypatch):
    """``None`` means not given (as from the CLI), and the flush sizes come from the environment."""
    from tlx.extractor import extract as extract_module

    class Planned(Exception):
        pass

    def lead(ranks, data, opts, *rest):
        raise Planned(opts)

    monkeypatch.setattr(extract_module, "_lead", lead)
    monkeypatch.setenv("TLX_FLUSH_ROWS", "7")
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "env-cache"))
    with pytest.raises(Planned) as planned:
        extract(folder_data, backbone=None, pooling=None, device=None, batch_size=None, cache_dir=None)
    opts = planned.value.args[0]
    assert (opts.backbone, opts.pooling, opts.device, opts.batch_size) == ("efficientnet_lite0", "avg", "auto", 32)
    assert (opts.flush_rows, opts.cache_dir) == (7, tmp_path / "env-cache")


def test_the_ranks_meet_before_leaving_only_after_a_normal_finish(folder_data, tmp_path, monkeypatch):
    """As predict and finetune: a rank that tears the group down while another is still in the last
    broadcast can abort gloo, so a finished extract passes the barrier; a failed one does not wait."""
    from tlx.extractor import distributed

    finished = []
    monkeypatch.setattr(distributed, "teardown", lambda ranks, done=False: finished.append(done))
    run(folder_data, tmp_path / "cache")
    with pytest.raises(tlx.errors.DatasetError):
        run(tmp_path / "no-such-data", tmp_path / "cache")
    assert finished == [True, False]
