"""``tlx extract`` and ``tlx info`` through typer's CliRunner: exit codes, stderr, ``--json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import broken_files, h5_files, make_folder_dataset

import tlx

FAST = ["--backbone", "tiny_cnn", "--workers", "0", "--quiet"]
JSON_KEYS = {
    "path",
    "backbone",
    "feature_dim",
    "n_images",
    "n_new",
    "n_reused",
    "n_removed",
    "n_failed",
    "failed",
    "seconds",
}


def assert_user_error(res, *words, code: int = 2):
    assert res.exit_code == code, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlx: error: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for w in words:
        assert w in lines[0]


def test_extract_json(cli, folder_data, tmp_path):
    cache = tmp_path / "cache"
    res = cli("extract", folder_data, *FAST, "--cache-dir", cache, "--json")
    assert res.exit_code == 0, res.stderr
    out = res.json()
    assert set(out) >= JSON_KEYS
    assert out["backbone"] == "tiny_cnn" and out["feature_dim"] == 32
    assert (out["n_images"], out["n_new"], out["n_reused"], out["n_removed"], out["n_failed"], out["failed"]) == (
        6,
        6,
        0,
        0,
        0,
        [],
    )
    assert isinstance(out["seconds"], float) and out["seconds"] > 0
    assert h5_files(cache) == [tlx.load_features(out["path"]).path]

    again = cli("extract", folder_data, *FAST, "--cache-dir", cache, "--json").json()
    assert (again["n_new"], again["n_reused"]) == (0, 6)


def test_extract_human_summary_and_pool_option(cli, folder_data, tmp_path):
    res = cli("extract", folder_data, *FAST, "--cache-dir", tmp_path / "c", "--pool", "avgmax")
    assert res.exit_code == 0, res.stderr
    assert "6 images x 64 (tiny_cnn)" in res.stdout and "6 new" in res.stdout


def test_cache_dir_from_environment(cli, folder_data, cache_dir):
    res = cli("extract", folder_data, *FAST, "--json")
    assert res.exit_code == 0, res.stderr
    assert len(h5_files(cache_dir)) == 1


def test_broken_images_warn_and_exit_0(cli, folder_data, tmp_path):
    expected = broken_files(folder_data / "ants")
    res = cli(
        "extract", folder_data, "--backbone", "tiny_cnn", "--workers", "0", "--cache-dir", tmp_path / "c", "--json"
    )
    assert res.exit_code == 0, res.stderr
    out = res.json()
    assert out["n_failed"] == 5 and out["n_images"] == 6
    assert {f["path"] for f in out["failed"]} == {f"ants/{n}" for n in expected}
    assert all(f["reason"] for f in out["failed"])
    assert "warning: 5 image(s) skipped" in res.stderr
    for name in expected:
        assert f"skipped ants/{name}: " in res.stderr
    assert "Traceback" not in res.stderr


def test_strict_exits_1(cli, folder_data, tmp_path):
    broken_files(folder_data / "ants")
    res = cli("extract", folder_data, *FAST, "--cache-dir", tmp_path / "c", "--strict")
    assert_user_error(res, "--strict", code=1)
    assert h5_files(tmp_path / "c") == []


def test_strict_with_only_an_undecodable_file_exits_1(cli, folder_data, tmp_path):
    (folder_data / "bees" / "text.jpg").write_text("not a picture")
    res = cli("extract", folder_data, *FAST, "--cache-dir", tmp_path / "c", "--strict")
    assert_user_error(res, "bees/text.jpg", code=1)
    assert h5_files(tmp_path / "c") == []


def _single_class(tmp_path):
    return make_folder_dataset(tmp_path / "one", classes=("ants",), per_class=2)


def _empty(tmp_path):
    (tmp_path / "empty" / "ants").mkdir(parents=True)
    (tmp_path / "empty" / "bees").mkdir(parents=True)
    return tmp_path / "empty"


@pytest.mark.parametrize(
    "make_data,extra,words",
    [
        (lambda t: t / "no-such-folder", [], ["does not exist"]),
        (_empty, [], ["no images found"]),
        (_single_class, [], ["single class"]),
        (lambda t: make_folder_dataset(t / "d"), ["--backbone", "resnet9000"], ["unknown backbone 'resnet9000'"]),
        (lambda t: make_folder_dataset(t / "d"), ["--backbone", "timm:resnet9000"], ["resnet9000"]),
        (lambda t: make_folder_dataset(t / "d"), ["--weights", "missing.pth"], ["missing.pth", "--weights"]),
    ],
    ids=["missing-path", "empty-folder", "single-class", "unknown-backbone", "unknown-timm-model", "missing-weights"],
)
def test_user_errors_exit_2_and_write_nothing(cli, tmp_path, make_data, extra, words):
    data = make_data(tmp_path)
    cache = tmp_path / "cache"
    res = cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", *extra, "--cache-dir", cache, "--json")
    assert_user_error(res, *words)
    assert res.stdout == ""
    assert not cache.exists()


@pytest.mark.parametrize(
    "extra", [["--pool", "median"], ["--batch-size", "0"], ["--device", "tpu"], ["--workers", "-1"]]
)
def test_bad_option_values_exit_2(cli, folder_data, tmp_path, extra):
    res = cli("extract", folder_data, *FAST, *extra, "--cache-dir", tmp_path / "cache")
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cache").exists()


def test_cuda_without_a_gpu_exits_2_and_writes_nothing(cli, folder_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    res = cli("extract", folder_data, *FAST, "--device", "cuda", "--cache-dir", tmp_path / "cache")
    assert_user_error(res, "--device cuda")
    assert not (tmp_path / "cache").exists()


def test_info_lists_caches(cli, folder_data, tmp_path):
    cache = tmp_path / "cache"
    made = cli("extract", folder_data, *FAST, "--cache-dir", cache, "--json").json()
    cli("extract", folder_data, *FAST, "--cache-dir", cache, "--pool", "max")

    listed = cli("info", cache, "--json")
    assert listed.exit_code == 0, listed.stderr
    rows = listed.json()
    assert len(rows) == 2 and made["path"] in {r["path"] for r in rows}
    row = next(r for r in rows if r["path"] == made["path"])
    assert (row["dataset"], row["backbone"], row["n_images"], row["feature_dim"], row["pooling"]) == (
        "data",
        "tiny_cnn",
        6,
        32,
        "avg",
    )
    assert row["updated"]

    table = cli("info", cache)
    assert table.exit_code == 0 and "tiny_cnn" in table.stdout and "data" in table.stdout

    one = cli("info", made["path"], "--json").json()
    assert [r["path"] for r in one] == [made["path"]]


def test_info_on_nothing(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("info", tmp_path / "empty")
    assert res.exit_code == 0 and "no feature caches" in res.stdout
    assert_user_error(cli("info", tmp_path / "nope"), "does not exist")


def test_info_backbones(cli):
    res = cli("info", "--backbones", "--json")
    assert res.exit_code == 0
    assert {"efficientnet_lite0", "tiny_cnn", "timm:<model>", "torchvision:<model>"} <= set(res.json())


@pytest.mark.parametrize("damage", ["not-hdf5", "truncated", "foreign-hdf5", "text-file"])
def test_info_on_a_file_that_is_not_a_cache_exits_2(cli, folder_data, tmp_path, damage):
    import h5py

    made = cli("extract", folder_data, *FAST, "--cache-dir", tmp_path / "cache", "--json").json()
    path = tmp_path / "bad.h5"
    if damage == "not-hdf5":
        path.write_bytes(b"garbage" * 100)
    elif damage == "truncated":
        data = Path(made["path"]).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign-hdf5":
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2, 3]
    else:
        path = tmp_path / "README.md"
        path.write_text("hello")
    res = cli("info", path)
    assert_user_error(res, str(path))
    assert "no feature caches" not in res.stdout


def test_info_on_a_folder_skips_damaged_caches_with_a_warning(cli, folder_data, tmp_path):
    cache = tmp_path / "cache"
    made = cli("extract", folder_data, *FAST, "--cache-dir", cache, "--json").json()
    (cache / "zz-damaged.h5").write_bytes(b"garbage")
    res = cli("info", cache, "--json")
    assert res.exit_code == 0, res.stderr
    assert [r["path"] for r in res.json()] == [made["path"]]
    assert "zz-damaged.h5" in res.stderr and "warning" in res.stderr


def test_info_shows_failures_with_reasons(cli, folder_data, tmp_path):
    expected = broken_files(folder_data / "ants")
    made = cli("extract", folder_data, *FAST, "--cache-dir", tmp_path / "cache", "--json").json()
    res = cli("info", made["path"])
    assert res.exit_code == 0, res.stderr
    for name, words in expected.items():
        line = next(line for line in res.stdout.splitlines() if f"ants/{name}:" in line)
        assert words in line
    row = cli("info", made["path"], "--json").json()[0]
    assert row["n_failed"] == 5 and {f["path"] for f in row["failed"]} == {f"ants/{n}" for n in expected}


def test_info_piped_is_neither_cut_nor_wrapped(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "a-dataset-with-a-rather-long-and-weird-name-for-the-table")
    made = cli("extract", data, *FAST, "--cache-dir", tmp_path / "cache", "--pool", "avgmax", "--json").json()
    res = cli("info", tmp_path / "cache")  # CliRunner's stdout is not a terminal, like a pipe
    assert res.exit_code == 0, res.stderr
    name = made["path"].rsplit("/", 1)[-1]
    [line] = [line for line in res.stdout.splitlines() if name in line]
    assert data.name in line and "avgmax" in line and "…" not in res.stdout


def test_extract_in_the_data_folder_never_reads_its_own_output(cli, folder_data, monkeypatch):
    monkeypatch.chdir(folder_data)  # `tlx extract .` writes ./tlx-cache, `tlx fit-head` writes ./runs
    monkeypatch.delenv("TLX_CACHE_DIR", raising=False)
    monkeypatch.delenv("TLX_RUNS_DIR", raising=False)
    first = cli("extract", ".", *FAST, "--json")
    assert first.exit_code == 0, first.stderr
    fitted = cli("fit-head", "--clf", "logreg", "--json")
    assert fitted.exit_code == 0, fitted.stderr
    assert list((folder_data / "runs").rglob("*.png")), "the run folder should hold plots (images)"
    again = cli("extract", ".", "--backbone", "tiny_cnn", "--workers", "0", "--json")
    assert again.exit_code == 0, again.stderr
    out = again.json()
    assert (out["path"], out["n_images"], out["n_new"]) == (first.json()["path"], 6, 0)
    assert tlx.load_features(out["path"]).classes == ["ants", "bees"]
    assert "note: ignored tlx-cache/" in again.stderr and "note: ignored runs/" in again.stderr


def test_device_cuda_is_refused_before_the_data_is_read(cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = cli("extract", tmp_path / "no-such-data", *FAST, "--device", "cuda", "--cache-dir", tmp_path / "cache")
    assert_user_error(res, "--device cuda", "no CUDA GPU")


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 8 + b"{}"])
def test_weights_that_are_not_valid_safetensors_exit_2(cli, folder_data, tmp_path, content):
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(content)
    res = cli("extract", folder_data, *FAST, "--weights", weights, "--cache-dir", tmp_path / "cache")
    assert_user_error(res, "bad.safetensors", "--weights")
    assert h5_files(tmp_path / "cache") == []
