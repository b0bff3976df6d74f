"""Benchmark: the wall time of the commands a user runs many times in a row, start-up included.

Each command runs as a fresh process, as from the shell, ``--repeats`` times; the median wall
is printed beside the median of a bare ``python -c "import numpy, h5py"`` measured in the same
run, so the ratio says how much tlx adds to the cheapest possible Python start.

    python benchmarks/cli_startup.py [--cache FILE] [--repeats 5]

Without ``--cache`` the ants/bees photos are extracted once into a temporary cache first (that
extraction is not timed). Targets (issue 8): fit-head linear, logreg, ridge, knn <= 1.0 s;
svm, rf, mlp <= 1.5 s; runs and info <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, require_data

TARGETS = {
    "linear": 1.0,
    "logreg": 1.0,
    "ridge": 1.0,
    "knn": 1.0,
    "svm": 1.5,
    "rf": 1.5,
    "mlp": 1.5,
    "runs": 0.5,
    "info": 0.5,
}


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall


def median_wall(cmd: list[str], env: dict, cwd: Path, repeats: int) -> float:
    timed(cmd, env, cwd)  # warm the page cache; not counted
    return statistics.median(timed(cmd, env, cwd) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache", type=Path, help="a tlx feature cache (default: extract the ants/bees photos into a temporary one)"
    )
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tlx-startup-"))
    env = {**os.environ, "TLX_RUNS_DIR": str(work / "runs"), "TLX_CACHE_DIR": str(work / "cache")}
    tlx = [sys.executable, "-m", "tlx"]
    cache = args.cache
    if cache is None:
        subprocess.run([*tlx, "extract", str(require_data(args.data)), "--quiet"], env=env, cwd=work, check=True)
        cache = next((work / "cache").glob("*.h5"))

    rows: list[tuple[str, str | None, float]] = []
    base = median_wall([sys.executable, "-c", "import numpy, h5py"], env, work, args.repeats)
    rows.append(("python -c 'import numpy, h5py'", None, base))
    for clf in ("linear", "logreg", "ridge", "knn", "svm", "rf", "mlp"):
        cmd = [*tlx, "fit-head", "--features", str(cache), "--clf", clf, "--quiet"]
        rows.append((f"tlx fit-head --clf {clf}", clf, median_wall(cmd, env, work, args.repeats)))
    rows.append(("tlx runs", "runs", median_wall([*tlx, "runs"], env, work, args.repeats)))
    rows.append(("tlx info", "info", median_wall([*tlx, "info", str(cache)], env, work, args.repeats)))

    print(f"median wall of {args.repeats} runs each (after one warm-up), cache {cache}")
    print(f"{'command':34} {'wall s':>7} {'x bare':>7} {'target':>7}  ok")
    result = {"bare_numpy_h5py_s": round(base, 3), "repeats": args.repeats, "commands": {}}
    for name, key, wall in rows:
        target = TARGETS.get(key) if key else None
        ok = "" if target is None else ("yes" if wall <= target else "NO")
        print(f"{name:34} {wall:7.3f} {wall / base:7.2f} {target or '':>7}  {ok}")
        if key:
            result["commands"][name] = {
                "wall_s": round(wall, 3),
                "ratio_to_bare": round(wall / base, 2),
                "target_s": target,
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
