"""``torchrun`` extraction and prediction with gloo on CPU: equal to one process, one result,
a killed rank stops the others within the timeout, and a re-run resumes both ranks' work."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_dataset, start_stopping_at_first_part, subprocess_env, wait_for_stop, write_image

import tlx
from tlx.extractor.extract import extract

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tlx_args(data, cache, *extra) -> list[str]:
    return ["-m", "tlx", "extract", str(data), "--backbone", "tiny_cnn", "--workers", "0", "--batch-size", "4",
            "--cache-dir", str(cache), "--json", *extra]  # fmt: skip


def test_two_gloo_ranks_equal_one_process(tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=7)
    single = extract(data, backbone="tiny_cnn", workers=0, batch_size=4, cache_dir=tmp_path / "one")
    proc = subprocess.run(
        [*TORCHRUN, str(free_port()), *tlx_args(data, tmp_path / "two")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 alone prints the result
    result = json.loads(lines[0])
    assert result["world_size"] == 2 and [r["rank"] for r in result["ranks"]] == [0, 1]
    assert [r["n_new"] for r in result["ranks"]] == [7, 7] and result["n_new"] == 14
    a, b = tlx.load_features(single.path), tlx.load_features(result["path"])
    assert a.paths == b.paths and a.sha256 == b.sha256 and a.y.tolist() == b.y.tolist()
    assert np.abs(a.X - b.X).max() <= 1e-5
    assert len(list(Path(result["path"] + ".parts").glob("*.h5"))) == 2  # one part per rank


def test_predict_under_torchrun_writes_one_csv(tmp_path):
    from tlx.heads.training.fit import fit_head

    data = make_folder_dataset(tmp_path / "data", per_class=4)
    res = extract(data, backbone="tiny_cnn", workers=0, cache_dir=tmp_path / "cache")
    fit = fit_head(res.path, clf="linear", out=tmp_path / "run")
    new = [write_image(tmp_path / "new" / f"n{i}.png", seed=200 + i) for i in range(5)]
    args = ["-m", "tlx", "predict", str(data), str(tmp_path / "new"), "--run", str(fit.run), "--workers", "0"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.csv")],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert one.returncode == 0, one.stderr
    args[args.index("--run")] = "--run-folder"  # torchrun's parser would take --run for its --run-path
    two = subprocess.run([*TORCHRUN, str(free_port()), *args, "--out", str(tmp_path / "two.csv")],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert len((tmp_path / "two.csv").read_text().splitlines()) == 1 + 8 + len(new)


def test_a_killed_rank_stops_the_other_then_a_rerun_resumes(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    for i in range(160):
        write_image(data / ("ants" if i % 2 else "bees") / f"img_{i:04d}.jpg", seed=i, size=(192, 160), fmt="JPEG")
    port = str(free_port())
    env = {**subprocess_env(), "TLX_DIST_TIMEOUT": "5", "TLX_FLUSH_ROWS": "4", "TLX_FLUSH_SECONDS": "1000",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2"}  # fmt: skip
    rank0 = subprocess.Popen(
        [sys.executable, *tlx_args(data, cache)],
        cwd=tmp_path,
        env={**env, "RANK": "0", "LOCAL_RANK": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # rank 1 stops for good right after flushing its first part, and is killed right there
    rank1, read = start_stopping_at_first_part(
        tlx_args(data, cache)[2:],
        {**env, "RANK": "1", "LOCAL_RANK": "1"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs = [rank0, rank1]
    stopped = wait_for_stop(read)
    procs[1].send_signal(signal.SIGKILL)
    _, err1 = procs[1].communicate()
    assert stopped and procs[1].returncode == -signal.SIGKILL, err1
    started = time.monotonic()
    _, err = procs[0].communicate(timeout=120)  # bounded: it must not wait forever for rank 1
    assert procs[0].returncode != 0 and time.monotonic() - started < 90
    assert "lost the other rank" in err and "re-run the same command to resume" in err, err
    assert not list(cache.glob("*.h5"))  # no index was committed ...
    left = [p.name for p in cache.glob("*.parts/*.h5")]
    assert any("-r000" in n for n in left) and any("-r001-" in n for n in left)  # ... but both ranks' parts stay

    resumed = extract(data, backbone="tiny_cnn", workers=0, batch_size=4, cache_dir=cache)
    assert resumed.n_images == 160 and resumed.n_resumed >= 8 and resumed.n_resumed + resumed.n_new == 160
    fresh = extract(data, backbone="tiny_cnn", workers=0, batch_size=4, cache_dir=tmp_path / "fresh")
    a, b = tlx.load_features(resumed.path), tlx.load_features(fresh.path)
    assert a.paths == b.paths and a.sha256 == b.sha256
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)


def test_two_gloo_ranks_make_the_same_views_as_one_process(tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=5, size=(64, 56))
    single = extract(data, backbone="tiny_cnn", workers=0, batch_size=4, cache_dir=tmp_path / "one", views=2)
    proc = subprocess.run(
        [*TORCHRUN, str(free_port()), *tlx_args(data, tmp_path / "two", "--views", "2")],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))
    assert (result["views"], result["n_views_new"]) == (2, 20)
    assert len(list(Path(result["path"] + ".views").glob("*.h5"))) == 2  # each rank wrote its own view part
    a, b = tlx.load_features(single.path), tlx.load_features(result["path"])
    va, vb = a.views(), b.views()
    assert va.image.tolist() == vb.image.tolist() and va.view.tolist() == vb.view.tolist()
    assert np.abs(va.X - vb.X).max() <= 1e-5
