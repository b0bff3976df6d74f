"""``tlx finetune`` user errors: one line on stderr, exit 2, no traceback, and words that name
only what this command has (DATA, --init-head; not --features, not export)."""

from __future__ import annotations

import pytest
from conftest import make_folder_dataset


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


def _one_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_data_and_no_cache_names_data_not_features(cli, tmp_path):
    line = _one_line(cli("finetune", "--backbone", "tiny_cnn"))
    assert "pass DATA" in line and "tlx extract" in line and "--features" not in line, line


def test_a_truncated_newest_cache_is_one_line(cli, folder_data, tmp_path):
    assert cli("extract", folder_data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    cache = next((tmp_path / "cache").glob("*.h5"))
    cache.write_bytes(cache.read_bytes()[:200])
    line = _one_line(cli("finetune", "--backbone", "tiny_cnn", "--epochs", "1", "--workers", "0"))
    assert str(cache) in line and "tlx extract" in line and "--features" not in line, line


def test_a_class_with_one_image_is_named(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=("ants", "bees"), per_class=4)
    for extra in list((data / "bees").iterdir())[1:]:
        extra.unlink()
    line = _one_line(cli("finetune", data, "--backbone", "tiny_cnn", "--epochs", "1", "--workers", "0"))
    assert "class 'bees' has 1 image" in line and "np." not in line, line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_refused_before_any_work(cli, folder_data, tmp_path):
    line = _one_line(
        cli("finetune", folder_data, "--backbone", "tiny_cnn", "--device", "cuda", "--out", tmp_path / "run")
    )
    assert "--device cuda" in line and "no CUDA GPU" in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()
