"""Benchmark: what ``tlx audit`` finds in real photo sets with injected faults, against the
baseline of the issue, and how it scales.

    python benchmarks/audit.py [--work DIR] [--rows 100000] [--skip-scale]

1. Label errors. Two faulted sets (``benchmarks/audit_data.py``): the ants/bees photos with 10
   training ants moved into bees (and the duplicate faults below), and a 5-class set of
   scikit-learn's digits written as PNGs (60 train / 20 val per class) with 10 training "4"s
   moved into "1". Each is extracted once with ``efficientnet_lite0 --views 4``. Printed: how
   many of the 10 moved images are among the audit's top 20 and top 30 label issues (and how
   many it flags in all), beside the issue's baseline on the same center features: 10-fold
   scikit-learn ``LogisticRegression`` ranked by the out-of-fold probability of the given label,
   and cleanlab's ``find_label_issues`` on those probabilities.
2. Duplicates and outliers on the faulted ants/bees: which injected copies were found, any other
   pair reported, the rank of the foreign image (a digit) among the outliers, the broken file.
3. Scale: ``--rows`` x 1280 synthetic rows (10 Gaussian classes, 500 exact and 500 near copies,
   1% flipped labels) audited in a child process: wall and CPU seconds, peak resident memory.

Prints a line per measure and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, require_data
from audit_data import ants_bees_faults, digits_moved


def extract_once(data: Path, cache: Path) -> Path:
    from tlx.extractor.extract import extract

    return Path(extract(data, cache_dir=cache, workers=1, views=4, device="cpu").path)


def baseline(feats, moved: set) -> dict:
    """The issue's baseline: 10-fold logistic regression, ranked by the given label's probability."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(10, shuffle=True, random_state=0)
    proba = cross_val_predict(LogisticRegression(max_iter=2000), feats.X, feats.y, cv=folds, method="predict_proba")
    order = np.argsort(proba[np.arange(len(feats.y)), feats.y], kind="stable")
    flagged = np.flatnonzero(find_label_issues(feats.y, proba, n_jobs=1))
    hit = [feats.paths[i] in moved for i in order]
    return {
        "top20": int(sum(hit[:20])),
        "top30": int(sum(hit[:30])),
        "cleanlab_flagged": len(flagged),
        "cleanlab_hits": int(sum(feats.paths[i] in moved for i in flagged)),
    }


def label_errors(name: str, cache: Path, moved: set) -> dict:
    import tlx

    t0 = time.perf_counter()
    report = tlx.audit(cache)
    seconds = time.perf_counter() - t0
    ranked = [i["path"] for i in report.label_issues]
    row = {
        "set": name,
        "images": report.n_images,
        "audit_top20": sum(p in moved for p in ranked[:20]),
        "audit_top30": sum(p in moved for p in ranked[:30]),
        "audit_flagged": len(ranked),
        "audit_seconds": round(seconds, 2),
        "baseline": baseline(tlx.load_features(cache), moved),
    }
    b = row["baseline"]
    print(
        f"{name}: moved images in the audit's top 20 / top 30 label issues: {row['audit_top20']} / "
        f"{row['audit_top30']} of 10 ({row['audit_flagged']} flagged in all, {seconds:.1f} s); baseline "
        f"10-fold LogisticRegression: {b['top20']} / {b['top30']}, cleanlab on it flags {b['cleanlab_hits']} of 10 "
        f"({b['cleanlab_flagged']} in all)"
    )
    return row


def duplicates(cache: Path, faults: dict) -> dict:
    import tlx

    report = tlx.audit(cache)
    exact = {tuple(sorted(d["paths"])): d["kind"] for d in report.exact_duplicates}
    near = {tuple(sorted(d["paths"])): (d["kind"], d["score"]) for d in report.near_duplicates}
    injected_exact = [tuple(sorted(p)) for k in ("leak_copies", "within_copy", "cross_class_copy") for p in faults[k]]
    injected_near = [tuple(sorted(p)) for p in faults["reencoded"]]
    outliers = [o["path"] for o in report.outliers]
    row = {
        "exact_found": sum(p in exact for p in injected_exact),
        "exact_injected": len(injected_exact),
        "exact_other": len(set(exact) - set(injected_exact)),
        "exact_kinds": sorted(set(exact.values())),
        "near_found": sum(p in near for p in injected_near),
        "near_injected": len(injected_near),
        "near_scores": [near[p][1] for p in injected_near if p in near],
        "near_other": len(set(near) - set(injected_near)),
        "foreign_outlier_rank": outliers.index(faults["foreign"][0]) + 1 if faults["foreign"][0] in outliers else None,
        "outliers": len(outliers),
        "broken_reported": [f["path"] for f in report.failed] == faults["broken"],
    }
    print(
        f"ants/bees duplicates: exact {row['exact_found']}/{row['exact_injected']} found ({row['exact_other']} other), "
        f"kinds {row['exact_kinds']}; re-encoded (JPEG q70, 0.8x) {row['near_found']}/{row['near_injected']} "
        f"found as near duplicates (cosine {row['near_scores']}; {row['near_other']} other pairs); "
        f"foreign image: outlier rank {row['foreign_outlier_rank']} of {row['outliers']}; "
        f"broken file reported: {row['broken_reported']}"
    )
    return row


def synthetic(rows: int, d: int = 1280, classes: int = 10, seed: int = 0):
    from tlx.cache.features import Features

    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, rows)
    X = rng.standard_normal((classes, d), dtype=np.float32)[y] * 0.35
    X += rng.standard_normal((rows, d), dtype=np.float32)
    sha = [f"{i:064x}" for i in range(rows)]
    src = rng.choice(rows, 1000, replace=False)
    for a in src[:500]:  # exact copies (same content hash)
        X[(a + 1) % rows], sha[(a + 1) % rows] = X[a], sha[a]
    for a in src[500:]:  # near copies
        X[(a + 2) % rows] = X[a] + 0.2 * rng.standard_normal(d, dtype=np.float32)
    flip = rng.choice(rows, rows // 100, replace=False)
    y[flip] = (y[flip] + 1) % classes
    names = [f"img{i}.jpg" for i in range(rows)]
    feats = Features(X, y, [str(c) for c in range(classes)], names, ["train"] * rows, sha, None, Path("synthetic.h5"))
    return feats, {names[i] for i in flip}


def scale_child(rows: int) -> None:
    import tlx

    feats, flipped = synthetic(rows)
    t0 = time.perf_counter()
    report = tlx.audit(feats)
    found = sum(i["path"] in flipped for i in report.label_issues)
    print(
        json.dumps(
            {
                "audit_seconds": time.perf_counter() - t0,
                "exact": len(report.exact_duplicates),
                "near": len(report.near_duplicates),
                "label_issues": len(report.label_issues),
                "flipped_found": found,
                "settings": report.settings,
            }
        )
    )


def scale(rows: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--scale-child", str(rows)], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row.update(
        rows=rows,
        process_wall_seconds=round(wall, 1),
        cpu_seconds=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        peak_rss_gib=round(after.ru_maxrss / 2**20, 2),
    )
    print(
        f"scale: {rows} x 1280 synthetic rows: audit {row['audit_seconds']:.1f} s wall (process {wall:.1f} s, "
        f"{row['cpu_seconds']} CPU s), peak {row['peak_rss_gib']} GiB resident (the 0.49 GiB matrix included); "
        f"{row['exact']} exact / {row['near']} near duplicate sets (500 / 500 planted), "
        f"{row['label_issues']} label issues flagged, {row['flipped_found']} of the {rows // 100} flipped "
        "labels among them"
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--work", type=Path, default=Path("audit-bench"), help="faulted copies and their caches")
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        scale_child(args.scale_child)
        return
    require_data(args.data)
    work = args.work
    ab = ants_bees_faults(args.data, work / "ab-faults")
    digits = digits_moved(work / "digits5")
    ab_cache = extract_once(work / "ab-faults", work / "caches")
    digits_cache = extract_once(Path(digits["root"]), work / "caches")
    result = {
        "label_errors": [
            label_errors("ants/bees, 10 ants moved to bees", ab_cache, set(ab["moved"])),
            label_errors("digits 0-4, 10 '4' moved to '1'", digits_cache, set(digits["moved"])),
        ],
        "duplicates": duplicates(ab_cache, ab),
    }
    if not args.skip_scale:
        result["scale"] = scale(args.rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
