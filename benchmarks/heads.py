"""Benchmark: the `linear` head against scikit-learn on the same synthetic 50,000 x 1280,
10-class feature matrix (seeded), in one run on one machine.

    python benchmarks/heads.py [--n 50000] [--dim 1280] [--classes 10] [--seed 0]

Prints each model's fit time and validation accuracy, against three baselines:
  * ``LogisticRegression()`` on the raw features (scikit-learn's default use);
  * ``StandardScaler`` + ``LogisticRegression()``: the fair baseline, the same model on the same
    standardized features as the linear head;
  * ``SGDClassifier(loss="log_loss").partial_fit`` over 10,000-row chunks after
    ``StandardScaler.partial_fit``: the out-of-core baseline for a cache that does not fit.
Target: linear <= 0.5x the fair baseline's time at equal or better accuracy. All are timed warm:
imports happen before the timers start.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np


def make_features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled-CNN-like features: non-negative, correlated, class signal spread over many dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centers = rng.normal(0.0, 0.12, size=(classes, dim)).astype(np.float32)
    mix = rng.normal(0.0, 1.0 / np.sqrt(32), size=(32, dim)).astype(np.float32)  # shared low-rank nuisance
    X = (
        centers[y]
        + rng.standard_normal((n, 32), dtype=np.float32) @ mix
        + rng.standard_normal((n, dim), dtype=np.float32)
    )
    X = np.maximum(X + 0.5, 0.0) * rng.uniform(0.5, 2.0, size=dim).astype(np.float32)  # ReLU-like, uneven scales
    return X.astype(np.float32), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression

    from tlx.heads import get_head, split_indices

    X, y = make_features(args.n, args.dim, args.classes, args.seed)
    paths = [f"{i:06d}" for i in range(len(y))]
    train, val, _ = split_indices(
        paths, y, [""] * len(y), val_fraction=0.2, seed=args.seed, hashes=[""] * len(y)
    )  # by row name
    Xtr, ytr, Xva, yva = X[train], y[train], X[val], y[val]
    print(
        f"data: {len(train)} train + {len(val)} val rows x {args.dim} features, "
        f"{args.classes} classes (float32, seed {args.seed})"
    )
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}")

    spec = get_head("linear")
    head = spec.build()
    t0 = time.perf_counter()
    head.fit(Xtr, ytr)
    t_lin = time.perf_counter() - t0
    acc_lin = float(np.mean(head.predict(Xva) == yva))
    print(
        f"tlx linear (weight_decay={head.weight_decay:g})  fit {t_lin:7.2f} s  "
        f"({head.n_iter_} L-BFGS iterations)  val accuracy {acc_lin:.4f}"
    )

    baselines = {}
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, model in (
        ("LogisticRegression() on raw features", LogisticRegression()),
        ("StandardScaler + LogisticRegression() (fair)", make_pipeline(StandardScaler(), LogisticRegression())),
    ):
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # it may stop at its default max_iter=100 with a ConvergenceWarning
            warnings.simplefilter("ignore")
            model.fit(Xtr, ytr)
        baselines[name] = (time.perf_counter() - t0, float(np.mean(model.predict(Xva) == yva)))
    t0 = time.perf_counter()
    scaler, sgd = StandardScaler(), SGDClassifier(loss="log_loss", random_state=args.seed)
    for start in range(0, len(Xtr), 10_000):
        scaler.partial_fit(Xtr[start : start + 10_000])
    for start in range(0, len(Xtr), 10_000):
        sgd.partial_fit(scaler.transform(Xtr[start : start + 10_000]), ytr[start : start + 10_000], np.unique(ytr))
    baselines["StandardScaler + SGDClassifier.partial_fit, 1 epoch (streamed)"] = (
        time.perf_counter() - t0,
        float(np.mean(sgd.predict(scaler.transform(Xva)) == yva)),
    )
    for name, (seconds, acc) in baselines.items():
        print(f"sklearn {name:<62} fit {seconds:7.2f} s  val accuracy {acc:.4f}")

    t_sk, acc_sk = baselines["StandardScaler + LogisticRegression() (fair)"]
    ratio = t_lin / t_sk
    verdict = "met" if ratio <= 0.5 and acc_lin >= acc_sk else "NOT met"
    print(
        f"time ratio linear / fair baseline = {ratio:.3f}  (speed-up {1 / ratio:.1f}x); "
        f"accuracy {acc_lin:.4f} vs {acc_sk:.4f}"
    )
    print(f"target (<= 0.5x time at equal or better accuracy): {verdict}")


if __name__ == "__main__":
    main()
