"""Benchmark: stage two at scale, through the CLI, on a synthetic cache.

    python benchmarks/heads_scale.py [--rows 1000000] [--width 1280] [--classes 100] [--max-memory 2GB]

Prints, each measured in this run:
  (a) the cache: float32 size, and the float16 copy's size (``--store-dtype float16``);
  (b) ``tlx fit-head --clf linear`` in memory: wall, fit_seconds, overhead, peak RSS and its
      ratio to the float32 size of the training rows;
  (c) the same streamed under ``--max-memory``: wall, peak RSS, val accuracy against (b);
  (d) linear on the float16 copy: accuracy against (b);
  (e) baselines: scikit-learn's SGDClassifier.partial_fit streaming the same chunks (one
      epoch, StandardScaler.partial_fit first), and StandardScaler + LogisticRegression on a
      subsample (``--baseline-rows``), the fair in-memory baseline;
and one JSON line. Peak RSS is /usr/bin/time's maximum resident set of the fit-head process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import write_synthetic_cache


def cli_fit(cache: Path, runs: Path, *extra: str) -> dict:
    """One `tlx fit-head --clf linear` process: wall, peak RSS (MiB) and its metrics.json."""
    out = runs / f"run-{len(list(runs.glob('run-*')))}"
    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        sys.executable,
        "-m",
        "tlx",
        "fit-head",
        "--features",
        str(cache),
        "--clf",
        "linear",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    peak_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "fit_s": round(metrics["fit_seconds"], 2),
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "n_train": metrics["n_train"],
        "streamed": metrics.get("streamed", False),
    }


def to_float16(src: Path, dst: Path, block: int = 50_000) -> Path:
    with h5py.File(src, "r") as f, h5py.File(dst, "w", libver="latest") as g:
        for name, obj in f.items():
            if name != "features":
                f.copy(obj, g, name)
        n, d = f["features"].shape
        half = g.create_dataset("features", shape=(n, d), dtype="f2", chunks=(max(1, 131072 // d), d))
        for start in range(0, n, block):
            half[start : start + block] = f["features"][start : start + block].astype(np.float16)
        g.attrs.update(dict(f.attrs))
    return dst


def sgd_baseline(cache: Path, block: int = 50_000) -> dict:
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    import tlx

    feats = tlx.load_features(cache, lazy=True)
    train = feats.subset(np.array([s == "train" for s in feats.split]))
    val = tlx.load_features(cache, split="val")
    started = time.perf_counter()
    scaler = StandardScaler()
    for X, _ in train.iter_chunks(block):
        scaler.partial_fit(X)
    sgd = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
    classes = np.arange(len(feats.classes))
    for X, y in train.iter_chunks(block):
        sgd.partial_fit(scaler.transform(X), y, classes=classes)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "val_accuracy": round(float(sgd.score(scaler.transform(val.X), val.y)), 4)}


def logreg_baseline(cache: Path, rows: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import tlx

    feats = tlx.load_features(cache, lazy=True)
    train_idx = np.flatnonzero([s == "train" for s in feats.split])[:rows]
    train = feats.subset(train_idx)
    val = tlx.load_features(cache, split="val")
    X = train.X.to_array()
    started = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)).fit(X, train.y)
    seconds = time.perf_counter() - started
    return {"rows": len(X), "seconds": round(seconds, 1), "val_accuracy": round(float(model.score(val.X, val.y)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--max-memory", default="2GB")
    ap.add_argument("--baseline-rows", type=int, default=100_000)
    ap.add_argument("--work", type=Path, help="folder for the caches (default: a temporary one)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tlx-heads-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs"
    runs.mkdir(exist_ok=True)
    os.environ["TLX_RUNS_DIR"] = str(runs)

    cache = work / f"synthetic-{args.rows}x{args.width}.h5"
    t0 = time.perf_counter()
    if not cache.exists():
        write_synthetic_cache(cache, args.rows, args.width, args.classes)
    half = work / f"synthetic-{args.rows}x{args.width}-f16.h5"
    if not half.exists():
        to_float16(cache, half)
    made = time.perf_counter() - t0
    size32, size16 = cache.stat().st_size, half.stat().st_size
    print(
        f"(a) cache {args.rows} x {args.width}, {args.classes} classes: float32 {size32 / 2**30:.2f} GiB, "
        f"float16 {size16 / 2**30:.2f} GiB ({size16 / size32:.2f}x); made in {made:.0f} s"
    )

    memory = cli_fit(cache, runs)
    train_bytes = memory["n_train"] * args.width * 4
    memory["peak_over_train_bytes"] = round(memory["peak_rss_mib"] * 2**20 / train_bytes, 2)
    memory["overhead_s"] = round(memory["wall_s"] - memory["fit_s"], 2)
    print(
        f"(b) in memory: wall {memory['wall_s']} s, fit {memory['fit_s']} s (overhead {memory['overhead_s']} s), "
        f"peak RSS {memory['peak_rss_mib']:.0f} MiB = {memory['peak_over_train_bytes']}x the "
        f"{train_bytes / 2**30:.2f} GiB of training rows, val accuracy {memory['val_accuracy']}"
    )
    streamed = cli_fit(cache, runs, "--max-memory", args.max_memory)
    print(
        f"(c) streamed (--max-memory {args.max_memory}): wall {streamed['wall_s']} s, fit {streamed['fit_s']} s, "
        f"peak RSS {streamed['peak_rss_mib']:.0f} MiB, val accuracy {streamed['val_accuracy']} "
        f"({100 * (streamed['val_accuracy'] - memory['val_accuracy']):+.2f} points)"
    )
    f16 = cli_fit(half, runs)
    print(
        f"(d) float16 cache: val accuracy {f16['val_accuracy']} "
        f"({100 * (f16['val_accuracy'] - memory['val_accuracy']):+.2f} points), fit {f16['fit_s']} s"
    )
    sgd = sgd_baseline(cache)
    print(f"(e) SGDClassifier.partial_fit, one streamed epoch: {sgd['seconds']} s, val accuracy {sgd['val_accuracy']}")
    logreg = logreg_baseline(cache, args.baseline_rows)
    print(
        f"    StandardScaler + LogisticRegression on {logreg['rows']} rows: {logreg['seconds']} s, "
        f"val accuracy {logreg['val_accuracy']}"
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "width": args.width,
                "classes": args.classes,
                "float32_bytes": size32,
                "float16_bytes": size16,
                "in_memory": memory,
                "streamed": streamed,
                "float16": f16,
                "sgd_partial_fit": sgd,
                "logreg_subsample": logreg,
            }
        )
    )


if __name__ == "__main__":
    main()
