"""Shared fixtures: tiny generated datasets, the real photos in ../shared/data, a CLI runner."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera"

# Tests marked own_process run in a child pytest process of their own. OpenVINO, once loaded
# beside torch and ONNX Runtime, crashed this long-lived test process (SIGSEGV, about 1 run in
# 3) in a later, unrelated test; a `tlx` process that loads it once, as users run it, did not
# (20 CLI runs, 20 in-process API runs alternating engines).
OWN_PROCESS = "TLX_TEST_OWN_PROCESS"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("own_process") is None or os.environ.get(OWN_PROCESS) == pyfuncitem.nodeid:
        return None  # an ordinary test, or the child itself: run the body here
    env = {**os.environ, OWN_PROCESS: pyfuncitem.nodeid}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", pyfuncitem.nodeid]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"in its own process (exit {proc.returncode}):\n{out[-4000:]}", pytrace=False)
    if " skipped" in out.splitlines()[-1]:
        reason = next((line for line in out.splitlines() if line.startswith("SKIPPED")), "skipped")
        pytest.skip(reason.split(": ", 1)[-1])
    return True


def backdate(root: Path, seconds: float = 60) -> None:
    """Files older than the racy window, as files usually are when a dataset is extracted."""
    import time

    past = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (past, past))


# The keys every run record (metrics.json) has, head and fine-tuning runs alike.
RUN_KEYS = {
    "kind",
    "clf",
    "params",
    "val_accuracy",
    "balanced_accuracy",
    "macro_f1",
    "per_class",
    "confusion_matrix",
    "log_loss",
    "fit_seconds",
    "feature_space",
    "cache",
    "classes",
    "split",
    "n_train",
    "n_val",
    "created",
    "tlx_version",
}


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48), fmt: str | None = None, **save) -> Path:
    """A small RGB image with structure (a gradient plus noise), so features differ per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + seed % 5)) % 256, (yy * (2 + seed % 7)) % 256, ((xx + yy) * (seed % 3 + 1)) % 256], -1)
    arr = np.clip(base + rng.integers(-30, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **save)
    return path


def make_folder_dataset(
    root: Path, classes=("ants", "bees"), per_class: int = 3, size=(40, 48), ext=".png", seed0: int = 0
) -> Path:
    seed = seed0
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"{c}_{i}{ext}", seed=seed, size=size)
            seed += 1
    return root


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A 100-byte PNG whose header claims width x height pixels (valid CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def broken_files(folder: Path) -> dict[str, str]:
    """Write one of each kind of undecodable file; name -> expected words in the reason."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    whole = write_image(folder / "whole.jpg", seed=4, size=(64, 64), fmt="JPEG").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("this is not a picture\n" * 10)
    bomb_png(folder / "bomb.png")
    (folder / "dangling.png").symlink_to(folder / "no-such-target.png")
    return {
        "empty.jpg": "not an image",
        "truncated.jpg": "truncated",
        "text.jpg": "not an image",
        "bomb.png": "decompression bomb",
        "dangling.png": "file not found",
    }


@pytest.fixture(autouse=True, scope="session")
def session_engine_cache(tmp_path_factory):
    """Engine artefacts (ONNX exports, OpenVINO IR, compiled packages) go to a folder of this
    test session rather than the user's ~/.cache/tlx/engines: the tests neither depend on what
    earlier work left there (`auto` picks an engine by what is cached) nor write to it."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TLX_ENGINE_CACHE_DIR", str(tmp_path_factory.mktemp("engines")))
    yield
    patch.undo()


@pytest.fixture
def folder_data(tmp_path) -> Path:
    """DATA/<class>/<image>: two classes, three small PNGs each."""
    return make_folder_dataset(tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("TLX_CACHE_DIR", str(d))
    return d


@pytest.fixture
def hymenoptera() -> Path:
    if not (HYMENOPTERA / "train").is_dir():
        pytest.skip(
            f"the real ants/bees photos are not at {HYMENOPTERA} (expected ../shared/data/hymenoptera next to the repo)"
        )
    return HYMENOPTERA


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No downloads and empty weight caches, whether or not this machine has network."""
    torch_home, hf_home = tmp_path / "torch_home", tmp_path / "hf_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    # huggingface_hub reads its environment once, at import: patch the constants it uses.
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"), raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home), raising=False)
    # torch.hub keeps a directory set by set_dir() over TORCH_HOME
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    # and a blocked socket, so a download attempt fails fast instead of waiting on the network
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def json(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


@pytest.fixture
def cli():
    """Run ``tlx ARGS`` in-process through typer's CliRunner; stdout and stderr apart."""
    from typer.testing import CliRunner

    from tlx.cli.app import app

    runner = CliRunner()

    def run(*args: str, env: dict | None = None) -> CliResult:
        return CliResult(runner.invoke(app, [str(a) for a in args], env=env))

    return run


def h5_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.h5")) if Path(folder).is_dir() else []


def subprocess_env(cache: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    if cache is not None:
        env["TLX_CACHE_DIR"] = str(cache)
    return env


# `python -c STOP_AFTER_FIRST_PART tlx-args...` runs the tlx CLI; when $TLX_TEST_READY_FD names
# an inherited pipe, the process stops for good right after it has flushed its first part file
# and says so on that pipe. A kill test then kills it at exactly that point, however loaded
# the machine is: no polling of the folder, no race with a process that finishes first.
STOP_AFTER_FIRST_PART = """
import os, sys, threading
from tlx.cache.parts import PartWriter

ready = os.environ.get("TLX_TEST_READY_FD")
if ready:
    flush = PartWriter.flush

    def flush_then_stop(self):
        flush(self)
        if self.segments:
            os.write(int(ready), b"1")
            threading.Event().wait()  # until killed

    PartWriter.flush = flush_then_stop
from tlx.cli.app import main

sys.argv[0] = "tlx"
main()
"""


def start_stopping_at_first_part(args: list[str], env: dict, **popen) -> tuple[subprocess.Popen, int]:
    """Start ``python -c STOP_AFTER_FIRST_PART *args``; returns the process and the read end of
    its pipe (pass it to :func:`wait_for_stop`)."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", STOP_AFTER_FIRST_PART, *args],
        env={**env, "TLX_TEST_READY_FD": str(write)},
        pass_fds=(write,),
        **popen,
    )
    os.close(write)  # the child holds the only write end: its exit reads as end of file
    return proc, read


def wait_for_stop(read: int, timeout: float = 600) -> bool:
    """Block until the process behind ``read`` has stopped after its first part (True) or has
    exited without reaching it (False). ``timeout`` only bounds a hung test."""
    import select

    try:
        ready, _, _ = select.select([read], [], [], timeout)
        return bool(ready) and os.read(read, 1) == b"1"
    finally:
        os.close(read)
