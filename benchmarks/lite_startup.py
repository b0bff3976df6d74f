"""Benchmark: what ``tlx extract`` with the default backbone pays before it reads an image, with
the native EfficientNet-Lite (this tree) against another tlx tree (e.g. one that built it with timm).

For each tree: ``python -X importtime -m tlx extract`` on a small folder (the import time of
timm, torch and the whole command, from the importtime log), the time to build the lite0
backbone with its weights in a process that has imported torch, then the wall of ``tlx extract
--engine eager`` on a 20-image folder into a fresh cache, ``--repeats`` times, the trees
interleaved so that machine load hits both alike.

    python benchmarks/lite_startup.py --before /work/main [--repeats 3]

``--before`` is the root of the other tlx tree (the folder that is the ``tlx`` package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, REPO, machine, require_data


def twenty_images(data: Path, dest: Path) -> Path:
    """Ten ants and ten bees from the ants/bees photos, as class folders."""
    for cls in ("ants", "bees"):
        (dest / cls).mkdir(parents=True)
        for src in sorted((data / "train" / cls).iterdir())[:10]:
            shutil.copy(src, dest / cls / src.name)
    return dest


def tree_env(tree: Path, work: Path, label: str) -> dict:
    """An environment in which ``import tlx`` is ``tree``."""
    pp = work / f"pp-{label}"
    pp.mkdir()
    (pp / "tlx").symlink_to(tree.resolve())
    return {**os.environ, "PYTHONPATH": str(pp), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def import_times(env: dict, data: Path, cache: Path) -> dict[str, float]:
    """Cumulative import seconds of timm, torch and tlx.cli.extract, and the sum over all top-level imports."""
    cmd = [sys.executable, "-X", "importtime", "-m", "tlx", "extract", str(data), "--engine", "eager", "--quiet"]
    proc = subprocess.run(cmd, env={**env, "TLX_CACHE_DIR": str(cache)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    found = {"timm": 0.0, "torch": 0.0, "total": 0.0}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not cumulative.isdigit():
            continue  # the header line
        seconds = int(cumulative) / 1e6
        if name in found:
            found[name] = seconds
        if not line.split("|")[-1].startswith("  "):  # a top-level import: its cumulative time is its own
            found["total"] += seconds
    return found


BUILD = (
    "import time, torch\n"
    "from tlx.extractor.registry import get_backbone\n"
    "t = time.perf_counter(); get_backbone('efficientnet_lite0').build(); print(time.perf_counter() - t)\n"
)


def build_seconds(env: dict) -> float:
    """Seconds to build the lite0 backbone with its real weights, torch already imported (timm's import included)."""
    proc = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building efficientnet_lite0 failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return float(proc.stdout.split()[-1])


def extract_wall(env: dict, data: Path, cache: Path) -> float:
    cmd = [sys.executable, "-m", "tlx", "extract", str(data), "--engine", "eager", "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env={**env, "TLX_CACHE_DIR": str(cache)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="root of the tlx tree to compare with")
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tlx-lite-startup-"))
    data = twenty_images(require_data(args.data), work / "data")
    trees = {"before": tree_env(args.before, work, "before"), "after": tree_env(REPO, work, "after")}
    for label, env in trees.items():  # warm the page cache and the weights file; not counted
        extract_wall(env, data, work / f"warm-{label}")
    imports = {label: import_times(env, data, work / f"imp-{label}") for label, env in trees.items()}
    builds = {label: build_seconds(env) for label, env in trees.items()}
    walls: dict[str, list[float]] = {label: [] for label in trees}
    for i in range(args.repeats):
        for label, env in trees.items():
            walls[label].append(extract_wall(env, data, work / f"run-{label}-{i}"))

    print(f"{machine()}; 20 images ({data}), --engine eager, a fresh cache each run, trees interleaved")
    header = f"{'tree':7} {'timm import s':>13} {'torch import s':>14} {'all imports s':>13} {'build lite0 s':>13}"
    print(f"{header}  extract wall s (median; runs)")
    for label in trees:
        imp, runs = imports[label], walls[label]
        listed = ", ".join(f"{w:.2f}" for w in runs)
        print(
            f"{label:7} {imp['timm']:13.2f} {imp['torch']:14.2f} {imp['total']:13.2f} {builds[label]:13.2f}  "
            f"{statistics.median(runs):.2f} ({listed})"
        )
    saved = statistics.median(walls["before"]) - statistics.median(walls["after"])
    print(f"extract wall saved: {saved:.2f} s (median)")
    result = {k: {"imports_s": imports[k], "build_s": builds[k], "extract_wall_s": walls[k]} for k in trees}
    print(json.dumps({"repeats": args.repeats, **result}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
