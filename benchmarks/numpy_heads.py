"""Benchmark: tlx's numpy svm, rf and mlp against the scikit-learn estimators they reproduce,
on the same features and split: validation accuracy and fit seconds, in one process.

    python benchmarks/numpy_heads.py [--cache FILE] [--repeats 3]

Pairs (standardized features wherever the head standardizes):
* svm: SvmHead vs StandardScaler + CalibratedClassifierCV(SVC(), sigmoid, StratifiedKFold(5,
  shuffle, seed 0), ensemble=False), the pipeline tlx used to wrap;
* rf: RfHead vs RandomForestClassifier(n_jobs=-1), at 100 and 300 trees, mean over 3 seeds;
* mlp: MlpHead vs MLPClassifier(solver="lbfgs"), and vs MLPClassifier's default Adam (what tlx
  used to wrap).

Without ``--cache`` the ants/bees photos are extracted once into a temporary cache first (not
timed). Fit seconds are the best of ``--repeats`` fits (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, require_data


def best_fit(make, X, y, repeats: int):
    seconds = []
    for _ in range(repeats):
        model = make()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's convergence warnings
            model.fit(X, y)
        seconds.append(time.perf_counter() - started)
    return model, min(seconds)


def pairs(seed: int = 0) -> list[tuple[str, object]]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from tlx.heads.forest import RfHead
    from tlx.heads.mlp import MlpHead
    from tlx.heads.svm import SvmHead

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    calibrated = CalibratedClassifierCV(SVC(), method="sigmoid", cv=folds, ensemble=False)
    out: list[tuple[str, object]] = [
        ("svm tlx (numpy)", lambda: SvmHead(seed=seed)),
        ("svm scikit-learn (calibrated SVC)", lambda: make_pipeline(StandardScaler(), calibrated)),
    ]
    for trees in (100, 300):
        out.append((f"rf tlx, {trees} trees", lambda t=trees: RfHead(n_estimators=t, seed=seed)))
        out.append(
            (
                f"rf scikit-learn, {trees} trees",
                lambda t=trees: RandomForestClassifier(t, n_jobs=-1, random_state=seed),
            )
        )
    lbfgs = MLPClassifier((256,), solver="lbfgs", alpha=1e-2, random_state=seed)
    adam = MLPClassifier((256,), alpha=1e-2, max_iter=200, random_state=seed)
    out += [
        ("mlp tlx (L-BFGS)", lambda: MlpHead(seed=seed)),
        ("mlp scikit-learn (L-BFGS)", lambda: make_pipeline(StandardScaler(), lbfgs)),
        ("mlp scikit-learn (Adam, tlx's before)", lambda: make_pipeline(StandardScaler(), adam)),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="a tlx feature cache (default: extract the ants/bees photos)")
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from tlx.cache.features import load_features

    cache = args.cache
    if cache is None:
        work = Path(tempfile.mkdtemp(prefix="tlx-numpy-heads-"))
        cmd = [sys.executable, "-m", "tlx", "extract", str(require_data(args.data)), "--quiet"]
        subprocess.run([*cmd, "--cache-dir", str(work / "cache")], check=True)
        cache = next((work / "cache").glob("*.h5"))
    train, val = load_features(cache, split="train"), load_features(cache, split="val")
    Xtr, ytr, Xva, yva = np.asarray(train.X), np.asarray(train.y), np.asarray(val.X), np.asarray(val.y)
    print(f"{cache}: {len(ytr)} train / {len(yva)} val rows x {Xtr.shape[1]}")
    rows = {}
    for name, _ in pairs():
        accuracies, seconds = [], []
        for seed in range(3) if name.startswith("rf") else [0]:
            make = dict(pairs(seed))[name]
            model, fit_s = best_fit(make, Xtr, ytr, args.repeats)
            accuracies.append(float(np.mean(model.predict(Xva) == yva)))
            seconds.append(fit_s)
        rows[name] = {"val_accuracy": round(float(np.mean(accuracies)), 4), "fit_s": round(float(np.mean(seconds)), 3)}
        print(f"{name:40} val accuracy {rows[name]['val_accuracy']:.4f}   fit {rows[name]['fit_s']:6.3f} s")
    print(json.dumps({"cache": str(cache), "n_train": len(ytr), "n_val": len(yva), "heads": rows}))


if __name__ == "__main__":
    main()
