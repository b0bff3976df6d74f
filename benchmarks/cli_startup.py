"""Benchmark: the wall time of the commands a user runs many times in a row, start-up included.

Each command runs as a fresh process, as from the shell, ``--repeats`` times; the median wall
is printed beside the median of a bare ``python -c "import numpy, h5py"`` measured in the same
run, so the ratio says how much tlx adds to the cheapest possible Python start.

    python benchmarks/cli_startup.py [--cache FILE] [--repeats 5]

Without ``--cache`` the ants/bees photos are extracted once into a temporary cache first (that
extraction is not timed). Targets (issue 19): fit-head --clf linear <= 1.0 s, runs and info
<= 0.5 s; a scikit-learn head (scikit-learn's own estimator) <= the bare
``python -c "import numpy, h5py, sklearn.<its module>"`` + its fit (``fit_seconds`` of the run)
+ 0.5 s, the bare import measured side by side in the same run.
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

TARGETS = {"linear": 1.0, "runs": 0.5, "info": 0.5}
# The scikit-learn heads and the module each imports (its bare-import baseline).
SKLEARN_HEADS = {
    "logreg": "sklearn.linear_model",
    "ridge": "sklearn.linear_model",
    "knn": "sklearn.neighbors",
    "svm": "sklearn.svm",
    "rf": "sklearn.ensemble",
    "mlp": "sklearn.neural_network",
}
SLACK_S = 0.5


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, proc.stdout


def median_wall(cmd: list[str], env: dict, cwd: Path, repeats: int) -> float:
    timed(cmd, env, cwd)  # warm the page cache; not counted
    return statistics.median(timed(cmd, env, cwd)[0] for _ in range(repeats))


def fit_head_walls(cmd: list[str], env: dict, cwd: Path, repeats: int) -> tuple[float, float]:
    """Median wall of ``fit-head ... --json`` and median ``fit_seconds`` it reports."""
    timed(cmd, env, cwd)
    walls, fits = [], []
    for _ in range(repeats):
        wall, out = timed(cmd, env, cwd)
        walls.append(wall)
        fits.append(json.loads(out.strip().splitlines()[-1])["fit_seconds"])
    return statistics.median(walls), statistics.median(fits)


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

    rows: list[tuple[str, float, float | None]] = []  # (command, wall, target)
    base = median_wall([sys.executable, "-c", "import numpy, h5py"], env, work, args.repeats)
    rows.append(("python -c 'import numpy, h5py'", base, None))
    fit = [*tlx, "fit-head", "--features", str(cache), "--quiet", "--json", "--clf"]
    rows.append(("tlx fit-head --clf linear", fit_head_walls([*fit, "linear"], env, work, args.repeats)[0], 1.0))
    for clf, module in SKLEARN_HEADS.items():
        bare = median_wall([sys.executable, "-c", f"import numpy, h5py, {module}"], env, work, args.repeats)
        wall, fit_s = fit_head_walls([*fit, clf], env, work, args.repeats)
        rows.append((f"python -c 'import numpy, h5py, {module}'", bare, None))
        rows.append((f"tlx fit-head --clf {clf} (fit {fit_s:.2f} s)", wall, bare + fit_s + SLACK_S))
    rows.append(("tlx runs", median_wall([*tlx, "runs"], env, work, args.repeats), TARGETS["runs"]))
    rows.append(("tlx info", median_wall([*tlx, "info", str(cache)], env, work, args.repeats), TARGETS["info"]))

    print(f"median wall of {args.repeats} runs each (after one warm-up), cache {cache}")
    print(f"{'command':52} {'wall s':>7} {'x bare':>7} {'target':>7}  ok")
    result = {"bare_numpy_h5py_s": round(base, 3), "repeats": args.repeats, "commands": {}}
    for name, wall, target in rows:
        ok = "" if target is None else ("yes" if wall <= target else "NO")
        shown = "" if target is None else f"{target:.3f}"
        print(f"{name:52} {wall:7.3f} {wall / base:7.2f} {shown:>7}  {ok}")
        result["commands"][name] = {
            "wall_s": round(wall, 3),
            "ratio_to_bare": round(wall / base, 2),
            "target_s": None if target is None else round(target, 3),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
