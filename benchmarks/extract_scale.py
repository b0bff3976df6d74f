"""Stage one at scale: distributed extraction, append cost, no-op re-runs, the ants/bees ratio.

(a) the same N generated images extracted by 1 process and by 2 `torchrun` processes (gloo,
    CPU): rows, max |diff| of the features, rates (on 2 cores no speed-up is expected);
(b) a cache of >= 200,000 synthetic rows (width 1280) written through the part/index code
    that `tlx extract` commits with, then 1 % new rows appended the same way: bytes written
    (/proc/self/io) and seconds against the size of the cache (target <= 5 %);
(c) >= 20,000 tiny image files extracted once, then a no-op re-run: its wall time and how many
    image files it opened (target: 0 opened, about 1 s);
(d) benchmarks/extract.py's b/a on the ants/bees photos (target >= 0.90).

  python benchmarks/extract_scale.py [--n-dist 200] [--rows 200000] [--files 20000] [--skip a,b,c,d]
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

HERE = Path(__file__).resolve().parent


def io_written() -> tuple[int, int]:
    """(bytes handed to write(), bytes sent to storage) by this process so far."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["write_bytes"])


def images(root: Path, n: int, size: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"img_{i:06d}.png")
    return root


def bench_distributed(work: Path, n: int, backbone: str) -> dict:
    import tlx
    from tlx.extractor.extract import extract

    data = images(work / "dist", n, 96)
    t = time.perf_counter()
    one = extract(data, backbone=backbone, device="cpu", cache_dir=work / "one", workers=1)
    one_s = time.perf_counter() - t
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "tlx", "extract", str(data), "--backbone", backbone, "--device", "cpu", "--workers", "1",
           "--cache-dir", str(work / "two"), "--json", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    two_s = time.perf_counter() - t
    two = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    a, b = tlx.load_features(one.path), tlx.load_features(two["path"])
    return {
        "n_images": n,
        "backbone": backbone,
        "rows_1": len(a),
        "rows_2": len(b),
        "same_rows": a.paths == b.paths and a.sha256 == b.sha256,
        "max_abs_diff": float(np.abs(a.X - b.X).max()),
        "img_s_1": round(n / one_s, 1),
        "img_s_2": round(n / two_s, 1),
        "per_rank": two["ranks"],
    }


def bench_append(work: Path, n_rows: int, width: int) -> dict:
    """A synthetic cache committed with the same store calls as `tlx extract`: parts + index."""
    from tlx.cache.compact import cache_bytes
    from tlx.cache.h5format import parts_dir
    from tlx.cache.index import Failures, Row, read_index, write_index
    from tlx.cache.parts import write_part
    from tlx.cache.space import FeatureSpace, Preprocessing

    pre = Preprocessing(224, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    space = FeatureSpace("synthetic", "0" * 64, "synthetic", pre, "avg", width)
    path = work / "append" / "synthetic.h5"
    rng = np.random.default_rng(0)

    def rows_for(start: int, n: int, part: str) -> tuple[list, list[str]]:
        hashes = [f"{i:064x}" for i in range(start, start + n)]
        rows = [
            Row(f"class_{i % 10}/img_{i:07d}.jpg", i % 10, "", h, (50_000 + i, 1_700_000_000_000_000_000, i), part, j)
            for j, (i, h) in enumerate(zip(range(start, start + n), hashes, strict=True))
        ]
        return rows, hashes

    def commit(rows, sizes):
        write_index(path, rows, [f"c{k}" for k in range(10)], Failures(), space, {}, sizes)

    rows, hashes = rows_for(0, n_rows, "part-base.h5")
    feats = rng.standard_normal((n_rows, width), dtype=np.float32)
    write_part(parts_dir(path), "part-base.h5", hashes, feats, space)
    commit(rows, {"part-base.h5": n_rows})
    del feats
    size = cache_bytes(path)

    k = n_rows // 100
    w0, b0 = io_written()
    t = time.perf_counter()
    index = read_index(path)  # what an incremental run reads: the index, not the vectors
    new_rows, new_hashes = rows_for(n_rows, k, "part-append.h5")
    write_part(parts_dir(path), "part-append.h5", new_hashes, rng.standard_normal((k, width), dtype=np.float32), space)
    old = [
        Row(p, int(lb), s, h, tuple(st), index.part_names[pp], int(r))
        for p, lb, s, h, st, pp, r in zip(index.paths, index.labels.tolist(), index.splits, index.hashes,
                                          index.stats.tolist(), index.source_part.tolist(), index.source_row.tolist(),
                                          strict=True)
    ]  # fmt: skip
    merged = sorted(old + new_rows, key=lambda r: r.path)
    commit(merged, dict(zip(index.part_names, index.part_rows, strict=True)) | {"part-append.h5": k})
    seconds = time.perf_counter() - t
    w1, b1 = io_written()
    with __import__("h5py").File(path, "r") as f:
        assert f["features"].shape == (n_rows + k, width)
    return {
        "rows": n_rows,
        "width": width,
        "added": k,
        "cache_bytes": size,
        "written_wchar": w1 - w0,
        "written_storage": b1 - b0,
        "fraction": round((w1 - w0) / size, 4),
        "seconds": round(seconds, 2),
        "index_bytes": path.stat().st_size,
    }


def bench_noop(work: Path, n_files: int) -> dict:
    from tlx.extractor.extract import extract

    data = images(work / "many", n_files, 8)
    time.sleep(2.1)  # past the racy window: files written this instant are re-hashed once, as in git
    t = time.perf_counter()
    first = extract(data, backbone="tiny_cnn", device="cpu", cache_dir=work / "c", batch_size=256)
    first_s = time.perf_counter() - t
    opened = []
    real_open = builtins.open

    def spy(file, *a, **kw):
        if str(file).startswith(str(data)):
            opened.append(file)
        return real_open(file, *a, **kw)

    builtins.open = spy
    try:
        t = time.perf_counter()
        again = extract(data, backbone="tiny_cnn", device="cpu", cache_dir=work / "c")
        again_s = time.perf_counter() - t
    finally:
        builtins.open = real_open
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tlx", "extract", str(data), "--backbone", "tiny_cnn",
                    "--cache-dir", str(work / "c"), "--quiet"], check=True)  # fmt: skip
    cli_s = time.perf_counter() - t
    return {
        "files": n_files,
        "first_run_s": round(first_s, 2),
        "noop_s": round(again_s, 3),
        "noop_cli_s": round(cli_s, 2),
        "opened": len(opened),
        "n_opened_reported": again.n_opened,
        "written": again.written,
        "new_in_first": first.n_new,
    }


def bench_ratio() -> dict:
    out = subprocess.run([sys.executable, str(HERE / "extract.py"), "--repeats", "3"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    print(out.rstrip())
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-dist", type=int, default=200)
    ap.add_argument("--dist-backbone", default="efficientnet_lite0")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--skip", default="")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    print(f"machine: {machine()}")
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "a" not in skip:
            r = result["distributed"] = bench_distributed(work, args.n_dist, args.dist_backbone)
            print(f"(a) {r['n_images']} images, {r['backbone']}: 1 process {r['rows_1']} rows {r['img_s_1']} img/s; "
                  f"2 torchrun/gloo processes {r['rows_2']} rows {r['img_s_2']} img/s (wall, incl. start-up); "
                  f"same rows {r['same_rows']}, max |diff| {r['max_abs_diff']:.2e}")  # fmt: skip
        if "b" not in skip:
            r = result["append"] = bench_append(work, args.rows, args.width)
            print(f"(b) append {r['added']} rows to {r['rows']} x {r['width']} ({r['cache_bytes'] / 1e6:.0f} MB): "
                  f"wrote {r['written_wchar'] / 1e6:.1f} MB ({100 * r['fraction']:.2f} % of the cache; storage "
                  f"{r['written_storage'] / 1e6:.1f} MB) in {r['seconds']} s; "
                  f"index {r['index_bytes'] / 1e6:.1f} MB")  # fmt: skip
        if "c" not in skip:
            r = result["noop"] = bench_noop(work, args.files)
            print(f"(c) {r['files']} image files: first run {r['first_run_s']} s; no-op re-run {r['noop_s']} s "
                  f"in-process ({r['noop_cli_s']} s as `tlx extract`), {r['opened']} image files opened, "
                  f"rewritten: {r['written']}")  # fmt: skip
        if "d" not in skip:
            r = result["ratio"] = bench_ratio()
            print(f"(d) ants/bees b/a = {r['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
