"""Every write survives the disk: a full, read-only or failing disk gives one line naming the
path and the cause, a non-zero exit, no traceback, no crash signal and nothing half-written;
what was committed before stays loadable and the next run in good conditions finishes the work.

The end-to-end tests mount small tmpfs file systems (root only; skipped otherwise) and run the
CLI in a subprocess, to see real exit codes and signals; the unit tests fake the errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import backdate, make_folder_dataset, subprocess_env, write_image

import tlx
from tlx.cache import parts as parts_module
from tlx.cache.h5write import h5_atomic
from tlx.cache.index import read_index
from tlx.cache.lock import CacheLock
from tlx.cache.parts import PartWriter
from tlx.common.atomic import atomic_path, write_json_atomic
from tlx.errors import StorageError
from tlx.extractor.extract import extract


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --------------------------------------------------------------------------- small disks


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; ``fill(free)`` leaves about ``free`` bytes on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # still busy: detach it


def fill(disk: Path, free: int) -> None:
    avail = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, avail - free))


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlx", *map(str, args)],
        env={**subprocess_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def extract_cli(data, cache, *extra, env=None):
    return cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--engine", "eager",
               "--cache-dir", cache, "--json", "--quiet", *extra, env=env)  # fmt: skip


def assert_one_line(proc, *words):
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # >= 0: no signal killed it
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlx: error: cannot "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.tmp")], list(folder.rglob("*"))


@pytest.mark.parametrize("free", [6_000, 24_000])
def test_extract_on_a_full_cache_disk_fails_in_one_line_then_resumes_on_a_bigger_one(tmp_path, small_disk, free):
    data = tmp_path / "data"
    for i in range(10):
        write_image(data / ("ants" if i % 2 else "bees") / f"old_{i:02d}.png", seed=i)
    cache = small_disk / "cache"
    first = extract(data, backbone="tiny_cnn", workers=0, engine="eager", cache_dir=cache)
    for i in range(30):
        write_image(data / ("ants" if i % 2 else "bees") / f"new_{i:02d}.png", seed=100 + i)
    fill(small_disk, free)

    proc = extract_cli(data, cache, env={"TLX_FLUSH_ROWS": "4", "TLX_FLUSH_SECONDS": "1000"})
    assert_one_line(proc, str(cache), "No space left on device")
    no_temporaries(small_disk)
    kept = tlx.load_features(first.path)  # the earlier commit is intact
    assert len(kept) == 10 and np.isfinite(kept.X).all()

    bigger = tmp_path / "bigger"
    shutil.copytree(cache, bigger)
    done = extract(data, backbone="tiny_cnn", workers=0, engine="eager", cache_dir=bigger)
    assert (done.n_images, done.n_reused, done.n_resumed + done.n_new) == (40, 10, 30)
    assert np.isfinite(tlx.load_features(done.path).X).all()


def test_fit_head_on_a_full_run_disk_fails_in_one_line(tmp_path, small_disk):
    data = make_folder_dataset(tmp_path / "data", per_class=6)
    res = extract(data, backbone="tiny_cnn", workers=0, engine="eager", cache_dir=tmp_path / "cache")
    fill(small_disk, 0)
    proc = cli("fit-head", "--features", res.path, "--clf", "linear", "--out", small_disk / "run")
    assert_one_line(proc, str(small_disk / "run"), "No space left on device")
    no_temporaries(small_disk)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_and_predict_onto_a_full_disk_fail_in_one_line(tmp_path, small_disk, fmt):
    from tlx.heads.training.fit import fit_head

    data = make_folder_dataset(tmp_path / "data", per_class=4)
    res = extract(data, backbone="tiny_cnn", workers=0, engine="eager", cache_dir=tmp_path / "cache")
    run = fit_head(res.path, clf="linear", out=tmp_path / "run").run
    fill(small_disk, 0)
    out = small_disk / f"model.{fmt}"
    proc = cli("export", "--run", run, "--format", fmt, "--out", out)
    assert_one_line(proc, str(out), "No space left on device")
    if fmt == "onnx":  # the CSV of predictions, once is enough
        csv = small_disk / "predictions.csv"
        proc = cli("predict", data, "--run", run, "--out", csv, "--workers", "0", "--engine", "eager")
        assert_one_line(proc, str(csv), "No space left on device")
    no_temporaries(small_disk)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_new_images_while_the_cache_is_read_only(tmp_path, small_disk):
    data = make_folder_dataset(tmp_path / "data", per_class=3)
    backdate(data)
    cache = small_disk / "cache"
    first = extract(data, backbone="tiny_cnn", workers=0, engine="eager", cache_dir=cache)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    same = extract_cli(data, cache)  # nothing to write: a read-only cache still answers
    assert same.returncode == 0 and "Traceback" not in same.stderr, same.stderr

    write_image(data / "ants" / "new.png", seed=77)
    proc = extract_cli(data, cache)
    assert_one_line(proc, str(first.path), "Read-only file system", "1 new or changed image")
    assert len(tlx.load_features(first.path)) == 6


# --------------------------------------------------------------------------- the writers, faked


def test_atomic_path_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = write_json_atomic(tmp_path / "metrics.json", {"old": 1})
    monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(StorageError, match=r"cannot write .*metrics.json: No space left on device; free some"):
        write_json_atomic(target, {"new": 2})
    assert target.read_text() == '{\n  "old": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_other_errors_of_the_body_pass_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x") as tmp:
        (tmp.parent / "missing" / "y").read_bytes()


def test_hdf5_writes_to_a_full_disk_raise_one_error_and_leave_nothing(tmp_path, monkeypatch):
    real_pwrite = os.pwrite

    def disk_of_4k(fd, data, offset):  # a disk that is full after 4 KiB
        if offset + len(data) > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", disk_of_4k)
    with pytest.raises(StorageError, match=r"part\.h5: No space left on device"), h5_atomic(tmp_path / "part.h5") as f:
        f.create_dataset("x", data=np.random.default_rng(0).random((2000, 32)))
    assert list(tmp_path.iterdir()) == []


def test_a_part_writer_whose_merge_fails_keeps_its_segments(tmp_path, monkeypatch, folder_data):
    res = extract(folder_data, backbone="tiny_cnn", workers=0, cache_dir=tmp_path / "cache")
    space = read_index(Path(res.path)).space
    writer = PartWriter(tmp_path / "parts", "p", space, flush_rows=2)
    rng = np.random.default_rng(0)
    writer.add([f"{i:064x}" for i in range(3)], rng.random((3, space.feature_dim)))
    writer.add([f"{i:064x}" for i in range(3, 5)], rng.random((2, space.feature_dim)))
    monkeypatch.setattr(parts_module, "merge_parts", lambda *a, **k: enospc())
    with pytest.raises(OSError):  # the fake raises a bare OSError: only StorageError is caught
        writer.close()

    def full(*args, **kwargs):
        raise StorageError(tmp_path / "parts" / "p.h5", OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(parts_module, "merge_parts", full)
    parts = writer.close()
    assert [len(h) for _, h in parts] == [3, 2]  # both complete segments, usable by the commit


def test_checkpoint_on_a_full_disk_is_one_error(tmp_path, monkeypatch):
    import torch

    from tlx.finetune.checkpoint import save_atomic

    (tmp_path / "last.pt").write_bytes(b"previous")
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(StorageError, match=r"last\.pt: No space left"):
        save_atomic({"w": torch.zeros(3)}, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_handle_errors_turns_a_stray_disk_error_into_one_line(capsys):
    import typer

    from tlx.cli.common import handle_errors

    @handle_errors
    def command():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/media/x/out.csv")

    with pytest.raises(typer.Exit) as exc:
        command()
    assert exc.value.exit_code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "tlx: error: /media/x/out.csv: Read-only file system; the file system is mounted read-only: "
        "remount it writable or choose a writable folder"
    ]


def test_a_lock_file_that_cannot_be_created_is_one_error(tmp_path, monkeypatch):
    import filelock

    monkeypatch.setattr(filelock.FileLock, "acquire", lambda self, *a, **k: enospc())
    expected = r"cannot create the lock file .*x\.h5\.lock: No space left"
    with pytest.raises(StorageError, match=expected), CacheLock(tmp_path / "x.h5"):
        pass


def test_the_part_files_hdf5_wrote_through_the_guard_read_back(tmp_path):
    with h5_atomic(tmp_path / "a.h5") as f:
        f.create_dataset("x", data=np.arange(10_000, dtype=np.float32).reshape(-1, 10), chunks=(100, 10))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["x"][()].sum() == np.arange(10_000, dtype=np.float32).sum()
