"""Benchmark: each scikit-learn head of tlx against scikit-learn's own pipeline, same split.

For ants/bees (the cached features of the photos, the data's own train/val split) and for
scikit-learn's digits (a seeded, stratified 70/30 split), each short name (logreg, ridge, knn,
svm, rf, mlp) is fitted by tlx (``get_head(name).build().fit``) and the reference
``make_pipeline(StandardScaler(), <scikit-learn estimator as tlx documents it>)`` is fitted on
the same rows; the script prints both validation accuracies and whether every prediction agrees.

    python benchmarks/sklearn_heads.py --cache tlx-cache/hymenoptera-efficientnet_lite0-avg-....h5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def references() -> dict:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "ridge": RidgeClassifier,
        "knn": KNeighborsClassifier,
        "svm": lambda: CalibratedClassifierCV(SVC(), ensemble=False),
        "rf": lambda: RandomForestClassifier(random_state=0),
        "mlp": lambda: MLPClassifier(random_state=0),
    }


def datasets(cache: Path | None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if cache is not None:
        import tlx

        feats = tlx.load_features(cache)
        train = np.array([s == "train" for s in feats.split])
        X = np.asarray(feats.X)
        yield "ants/bees", X[train], feats.y[train], X[~train], feats.y[~train]
    X, y = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X.astype(np.float32), y, test_size=0.3, stratify=y, random_state=0)
    yield "digits", Xtr, ytr, Xva, yva


def main() -> None:
    import warnings

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tlx.heads import get_head

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="a tlx feature cache of the ants/bees photos (omit: digits only)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # MLP's ConvergenceWarning on both sides alike
    rows = []
    print(f"{'data':10} {'head':7} {'tlx acc':>8} {'sklearn acc':>11} {'same predictions':>16} {'tlx fit s':>9}")
    for data, Xtr, ytr, Xva, yva in datasets(args.cache):
        for name, make in references().items():
            t0 = time.perf_counter()
            head = get_head(name).build().fit(Xtr, ytr)
            fit_s = time.perf_counter() - t0
            ref = make_pipeline(StandardScaler(), make()).fit(Xtr, ytr)
            ours, theirs = head.predict(Xva), ref.predict(Xva)
            row = {
                "data": data,
                "head": name,
                "tlx_accuracy": float(np.mean(ours == yva)),
                "sklearn_accuracy": float(np.mean(theirs == yva)),
                "same_predictions": bool(np.array_equal(ours, theirs)),
                "tlx_fit_s": round(fit_s, 3),
            }
            rows.append(row)
            print(
                f"{data:10} {name:7} {row['tlx_accuracy']:8.4f} {row['sklearn_accuracy']:11.4f} "
                f"{row['same_predictions']!s:>16} {fit_s:9.2f}"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
