"""Engines side by side: forward rate, `tlx extract` end to end (first and cached run), and the
largest feature difference from eager.

For each engine, in one run and on the same images:
  (a) forward rate on already-decoded uint8 tensors (normalization + the engine's forward),
      after its set-up, with the engine's own thread count;
  (b) `tlx extract DATA --engine E` as a fresh process into a fresh feature cache, twice:
      cold (an empty engine cache, which holds compile's inductor cache too: the export or
      compile is paid) and warm (the engine cache from the cold run); wall time of the whole
      command, torch import included;
  (c) max |features - eager fp32| over every image.
`auto` is run warm too, to show what it picks. Rounds are interleaved and medians reported,
because the machine is shared.

    python benchmarks/engines.py [--data DIR] [--backbone NAME] [--engines eager,onnxruntime,...] [--repeats 3]
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
from _common import HYMENOPTERA, machine, require_data


def forward_rates(backbone: str, engines: list[str], paths: list[str], batch: int, art: Path, repeats: int) -> dict:
    import numpy as np
    import torch

    from tlx.extractor.engine import FeatureRunner
    from tlx.extractor.preprocess import ResizeCrop
    from tlx.extractor.registry import get_backbone

    net = get_backbone(backbone).build()
    decoded = torch.stack([ResizeCrop(net.cfg.preprocessing).load(p) for p in paths])  # untimed
    runners, feats = {}, {}
    for e in engines:
        r = FeatureRunner(net, "avg", device="cpu", engine=e, artefact_dir=art)
        r.forward.plan(None)
        feats[e] = np.concatenate([r.forward_uint8(decoded[i : i + batch]) for i in range(0, len(decoded), batch)])
        runners[e] = r
    rates: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(repeats):
        for e in engines:
            torch.set_num_threads(runners[e].forward.engine.threads)  # type: ignore[union-attr]
            start = time.perf_counter()
            for i in range(0, len(decoded), batch):
                runners[e].forward_uint8(decoded[i : i + batch])
            rates[e].append(len(decoded) / (time.perf_counter() - start))
    return {
        e: {
            "forward_img_s": statistics.median(rates[e]),
            "forward_runs": rates[e],
            "max_abs_diff": float(np.abs(feats[e] - feats["eager"]).max()) if "eager" in feats else None,
            "threads": runners[e].forward.engine.threads,  # type: ignore[union-attr]
        }
        for e in engines
    }


def extract_once(data: Path, backbone: str, engine: str, art: Path, batch: int) -> dict:
    env = dict(os.environ, TLX_ENGINE_CACHE_DIR=str(art))
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)  # compile keeps inductor's cache inside the engine cache
    with tempfile.TemporaryDirectory() as cache:
        cmd = [sys.executable, "-m", "tlx", "extract", str(data), "--backbone", backbone, "--engine", engine]
        cmd += ["--cache-dir", cache, "--batch-size", str(batch), "--json", "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"tlx extract --engine {engine} failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "img_s": out["n_new"] / wall, "engine": out["engine"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--engines", default="eager,compile,onnxruntime,openvino")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = require_data(args.data)

    from tlx.extractor.discovery import discover
    from tlx.extractor.engines import get_engine

    engines = [e for e in args.engines.split(",") if not get_engine(e).unusable("cpu", "fp32")]
    skipped = sorted(set(args.engines.split(",")) - set(engines))
    index = discover(data)
    paths = [str(index.abspath(it)) for it in index.items]
    root = Path(tempfile.mkdtemp(prefix="tlx-engines-"))

    fwd = forward_rates(args.backbone, engines, paths, args.batch_size, root / "fwd", args.repeats)
    cold: dict[str, list[dict]] = {e: [] for e in engines}
    warm: dict[str, list[dict]] = {e: [] for e in [*engines, "auto"]}
    for r in range(args.repeats):
        for e in engines:
            art = root / f"art-{e}-{r}"
            cold[e].append(extract_once(data, args.backbone, e, art, args.batch_size))
            warm[e].append(extract_once(data, args.backbone, e, art, args.batch_size))
        auto_art = root / f"art-auto-{r}"
        for e in engines:  # every engine's artefacts in one folder, as after real use
            if (root / f"art-{e}-{r}").is_dir():  # eager keeps nothing
                shutil.copytree(root / f"art-{e}-{r}", auto_art, dirs_exist_ok=True)
        warm["auto"].append(extract_once(data, args.backbone, "auto", auto_art, args.batch_size))
        done = {e: (round(cold[e][-1]["img_s"], 1), round(warm[e][-1]["img_s"], 1)) for e in engines}
        print(f"round {r + 1}: extract img/s (first, second run) {done}", file=sys.stderr, flush=True)
    report(args, data, paths, engines, skipped, fwd, cold, warm)


def report(args, data, paths, engines, skipped, fwd, cold, warm) -> None:
    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    base = med(warm["eager"], "img_s") if "eager" in warm else float("nan")
    print(f"machine: {machine()}")
    print(
        f"data: {data} ({len(paths)} images), backbone {args.backbone}, batch {args.batch_size}, {args.repeats} rounds"
    )
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    print(
        f"{'engine':12} {'threads':>7} {'forward':>9} {'extract 1st':>12} {'extract 2nd':>12} "
        f"{'2nd/eager':>9} {'max|diff|':>9}"
    )
    rows = {}
    for e in engines:
        c, w = med(cold[e], "img_s"), med(warm[e], "img_s")
        d = fwd[e]["max_abs_diff"]
        rows[e] = {**fwd[e], "extract_cold_img_s": c, "extract_warm_img_s": w, "warm_vs_eager": w / base}
        rows[e]["cold_runs"] = [round(r["img_s"], 2) for r in cold[e]]
        rows[e]["warm_runs"] = [round(r["img_s"], 2) for r in warm[e]]
        print(
            f"{e:12} {fwd[e]['threads']:>7} {fwd[e]['forward_img_s']:>7.1f}/s {c:>10.1f}/s {w:>10.1f}/s "
            f"{w / base:>8.2f}x {d:>9.1e}"
        )
    picked = [r["engine"]["engine"] for r in warm["auto"]]
    a = med(warm["auto"], "img_s")
    print(f"{'auto':12} {'':>7} {'':>9} {'':>12} {a:>10.1f}/s {a / base:>8.2f}x   picked {', '.join(picked)}")
    print("extract = wall time of `tlx extract` as a new process (torch import included) into an empty feature cache;")
    print("1st: empty engine cache (export/compile paid); 2nd: the engine cache of the 1st run")
    print(json.dumps({"backbone": args.backbone, "n_images": len(paths), "engines": rows, "auto_picked": picked,
                      "auto_extract_img_s": a}, default=float))  # fmt: skip


if __name__ == "__main__":
    main()
