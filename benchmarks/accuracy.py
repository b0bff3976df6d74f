"""Benchmark: which cached-feature levers buy accuracy on the ants/bees photos, and at what cost.

For each configuration: one `tlx extract` per feature space into a fresh cache (timed), then
`fit-head --clf linear` (defaults) and `fit-head --clf logreg --sweep` on the data's own
train/val split (val accuracy, and the wall time of the whole fit call: loading the cache,
standardizing fused blocks, fitting; the sweep's grid included for logreg).

    python benchmarks/accuracy.py [--data ../shared/data/hymenoptera] [--workers 2]

Configurations: lite0 center (today's recipe); lite0 with 3 inner stages; lite1 and lite2
center; lite0 + lite2 fused; lite0 with stages + lite2 fused; then the best of them with
`tlx predict --tta` over the val folders (center view and its mirror averaged; the mirror goes
through the backbone(s), timed as "extract"); last, lite0 and lite2 with augmented views in
the cache: `tlx extract --views K --view-recipe R` on top of the center cache (extract seconds =
center + views), then both heads fitted with `--views K` (validation on val centers only).
`benchmarks/views.py` compares the recipes. Prints a table and one JSON line.

    python benchmarks/accuracy.py [--views 4] [--view-recipe crop]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, machine, require_data

# name -> the caches it fits on: (backbone, stages) each
CONFIGS = {
    "lite0 center": [("efficientnet_lite0", 0)],
    "lite0 + 3 stages": [("efficientnet_lite0", 3)],
    "lite1 center": [("efficientnet_lite1", 0)],
    "lite2 center": [("efficientnet_lite2", 0)],
    "lite0 + lite2 fused": [("efficientnet_lite0", 0), ("efficientnet_lite2", 0)],
    "lite0 3 stages + lite2 fused": [("efficientnet_lite0", 3), ("efficientnet_lite2", 0)],
}
VIEW_ROWS = {"lite0 with views": "efficientnet_lite0", "lite2 with views": "efficientnet_lite2"}


def extract_all(data: Path, cache: Path, workers: int) -> dict:
    from tlx.extractor.extract import extract

    done = {}
    for key in sorted({c for caches in CONFIGS.values() for c in caches}):
        backbone, stages = key
        t0 = time.perf_counter()
        res = extract(data, backbone=backbone, stages=stages, cache_dir=cache, workers=workers, device="cpu")
        done[key] = {"path": res.path, "seconds": time.perf_counter() - t0, "dim": res.feature_dim}
        print(
            f"extracted {backbone} stages={stages}: {res.n_images} x {res.feature_dim} in {done[key]['seconds']:.1f} s"
        )
    return done


def tta_accuracy(run: Path, data: Path) -> tuple[float, float]:
    """Accuracy of ``predict --tta`` on the val folders, and its seconds."""
    from tlx.heads.runs import load_run
    from tlx.inference.predict import predict_paths

    t0 = time.perf_counter()
    preds = predict_paths(load_run(run), [data / "val"], device="cpu", tta=True)
    acc = preds.folder_accuracy()
    assert acc is not None
    return acc, time.perf_counter() - t0


def fit(features, clf: str, sweep: bool, out: Path, views: int = 0) -> tuple[float, float]:
    from tlx.heads.training.fit import fit_heads

    t0 = time.perf_counter()
    result = fit_heads(features, clf=clf, sweep=sweep, out=out, views=views)[0]
    return result.val_accuracy, time.perf_counter() - t0


def view_rows(data: Path, caches: dict, tmp: Path, args) -> list[dict]:
    """Add views to the center caches (only the views are computed), then fit with them."""
    from tlx.extractor.extract import extract

    rows = []
    for name, backbone in VIEW_ROWS.items():
        center = caches[(backbone, 0)]
        t0 = time.perf_counter()
        res = extract(
            data, backbone=backbone, cache_dir=Path(center["path"]).parent, workers=args.workers, device="cpu",
            views=args.views, view_recipe=args.view_recipe,
        )  # fmt: skip
        seconds = center["seconds"] + time.perf_counter() - t0
        print(f"added {res.views} {res.view_recipe} views to {backbone}: {res.n_views_new} new, total {seconds:.1f} s")
        lin, lin_s = fit(res.path, "linear", False, tmp / f"runs/{name}-linear", args.views)
        lr, lr_s = fit(res.path, "logreg", True, tmp / f"runs/{name}-logreg", args.views)
        rows.append(
            {
                "config": f"{name} ({args.views} {res.view_recipe})",
                "width": center["dim"],
                "linear": round(lin, 4),
                "logreg_sweep": round(lr, 4),
                "extract_s": round(seconds, 1),
                "fit_linear_s": round(lin_s, 2),
                "fit_logreg_sweep_s": round(lr_s, 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HYMENOPTERA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--views", type=int, default=4, help="views per image for the 'with views' rows")
    parser.add_argument("--view-recipe", default="crop", help="their recipe (see benchmarks/views.py)")
    args = parser.parse_args()
    data = require_data(args.data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlx-accuracy-") as tmp:
        caches = extract_all(data, Path(tmp) / "cache", args.workers)
        for n, (name, keys) in enumerate(CONFIGS.items()):
            paths = [caches[k]["path"] for k in keys]
            features = paths[0] if len(paths) == 1 else paths
            lin, lin_s = fit(features, "linear", False, Path(tmp) / f"runs/{n}-linear")
            lr, lr_s = fit(features, "logreg", True, Path(tmp) / f"runs/{n}-logreg")
            rows.append(
                {
                    "config": name,
                    "width": sum(caches[k]["dim"] for k in keys),
                    "linear": round(lin, 4),
                    "logreg_sweep": round(lr, 4),
                    "extract_s": round(sum(caches[k]["seconds"] for k in keys), 1),
                    "fit_linear_s": round(lin_s, 2),
                    "fit_logreg_sweep_s": round(lr_s, 2),
                }
            )
        best = max(rows, key=lambda r: (max(r["linear"], r["logreg_sweep"]), -r["extract_s"]))
        n = list(CONFIGS).index(best["config"])
        lin, lin_s = tta_accuracy(Path(tmp) / f"runs/{n}-linear", data)
        lr, lr_s = tta_accuracy(Path(tmp) / f"runs/{n}-logreg", data)
        rows.append(
            {
                "config": f"{best['config']} --tta",
                "width": best["width"],
                "linear": round(lin, 4),
                "logreg_sweep": round(lr, 4),
                "extract_s": round(best["extract_s"] + (lin_s + lr_s) / 2, 1),  # + the mirror pass, once
                "fit_linear_s": best["fit_linear_s"],
                "fit_logreg_sweep_s": best["fit_logreg_sweep_s"],
            }
        )
        rows += view_rows(data, caches, Path(tmp), args)
    header = (
        f"{'configuration':<34} {'width':>6} {'linear':>7} {'logreg --sweep':>15} {'extract s':>10} "
        f"{'fit s (lin / sweep)':>20}"
    )
    print(f"\nants/bees val accuracy ({machine()})\n{header}")
    for r in rows:
        print(
            f"{r['config']:<34} {r['width']:>6} {r['linear']:>7.3f} {r['logreg_sweep']:>15.3f} "
            f"{r['extract_s']:>10.1f} {r['fit_linear_s']:>9.2f} / {r['fit_logreg_sweep_s']:<8.2f}"
        )
    print(json.dumps({"benchmark": "accuracy", "machine": machine(), "rows": rows, "best": best["config"]}))


if __name__ == "__main__":
    main()
