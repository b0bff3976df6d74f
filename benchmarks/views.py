"""Benchmark: do augmented views in the cache (`tlx extract --views K`) buy head accuracy?

For each view recipe: one `tlx extract --views K` into a fresh cache (timed: the center crops
plus K views of every image, each image decoded once), then `fit-head --clf linear` and
`fit-head --clf logreg --sweep` on the data's own train/val split with 0 views (the center rows
alone) and with N views of each training image, for each N asked. Validation is always the
center rows of the val images.

    python benchmarks/views.py [--backbone efficientnet_lite0] [--recipes crop:0.35,crop,crop:0.7,flip]
                               [--views 4,8] [--data ../shared/data/hymenoptera] [--workers 2]

Prints a table and one JSON line.
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


def fit(cache: str, clf: str, sweep: bool, views: int, out: Path) -> tuple[float, float]:
    from tlx.heads.training.fit import fit_heads

    t0 = time.perf_counter()
    result = fit_heads(cache, clf=clf, sweep=sweep, out=out, views=views)[0]
    return result.val_accuracy, time.perf_counter() - t0


def main() -> None:
    from tlx.extractor.augment import parse_recipe
    from tlx.extractor.extract import extract

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HYMENOPTERA)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--recipes", default="crop:0.35,crop,crop:0.7,flip")
    parser.add_argument("--views", default="4,8", help="view counts to fit with (flip: 1)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = require_data(args.data)
    counts = sorted({int(v) for v in args.views.split(",")})
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlx-views-") as tmp:
        for n, text in enumerate(args.recipes.split(",")):
            recipe = parse_recipe(text)
            wanted = [c for c in counts if c <= recipe.max_views] or [recipe.max_views]
            t0 = time.perf_counter()
            res = extract(
                data, backbone=args.backbone, cache_dir=Path(tmp) / f"c{n}", workers=args.workers, device="cpu",
                views=max(wanted), view_recipe=text,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            print(
                f"extracted {args.backbone} + {max(wanted)} {recipe.name} views: "
                f"{res.n_images} images in {seconds:.1f} s"
            )
            for k in ([0] if n == 0 else []) + wanted:
                lin, lin_s = fit(res.path, "linear", False, k, Path(tmp) / f"runs/{n}-{k}-linear")
                lr, lr_s = fit(res.path, "logreg", True, k, Path(tmp) / f"runs/{n}-{k}-logreg")
                rows.append(
                    {
                        "recipe": "none (center)" if k == 0 else recipe.name,
                        "views": k,
                        "linear": round(lin, 4),
                        "logreg_sweep": round(lr, 4),
                        "extract_s": round(seconds, 1),
                        "fit_linear_s": round(lin_s, 2),
                        "fit_logreg_sweep_s": round(lr_s, 2),
                    }
                )
                print(json.dumps(rows[-1]))
    print(f"\nants/bees val accuracy with views, {args.backbone} ({machine()})")
    print(
        f"{'recipe':<15} {'views':>5} {'linear':>7} {'logreg --sweep':>15} {'extract s':>10} "
        f"{'fit s (lin / sweep)':>20}"
    )
    for r in rows:
        print(
            f"{r['recipe']:<15} {r['views']:>5} {r['linear']:>7.3f} {r['logreg_sweep']:>15.3f} "
            f"{r['extract_s']:>10.1f} {r['fit_linear_s']:>9.2f} / {r['fit_logreg_sweep_s']:<8.2f}"
        )
    print(json.dumps({"benchmark": "views", "backbone": args.backbone, "machine": machine(), "rows": rows}))


if __name__ == "__main__":
    main()
