"""Classification metrics in numpy for ``metrics.json``, each equal to ``sklearn.metrics``'s (tests/test_metrics.py
checks edge cases) without its import, a second of ``tlx fit-head --clf linear``. As scikit-learn counts:
``macro_f1`` leaves out a class absent from both y_true and y_pred, ``balanced_accuracy`` averages recall over
the classes in y_true, ``per_class`` is 0 where undefined, ``log_loss`` clips probabilities to [eps, 1 - eps].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def compute_metrics(y_true, proba, classes: Sequence[Any]) -> dict[str, Any]:
    """The metrics of ``metrics.json``; ``y_true`` holds indices into ``classes``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise ValueError(f"proba must be {len(y_true)} x {k}, got {proba.shape}")
    y_pred = proba.argmax(axis=1)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # rows: true, columns: predicted
    hits = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(hits, predicted), _ratio(hits, support)
    f1 = _ratio(2 * hits, support + predicted)  # scikit-learn's form: 2 tp / (2 tp + fp + fn)
    seen = (support > 0) | (predicted > 0)  # scikit-learn's default labels for macro F1
    present = support > 0
    eps = np.finfo(np.float64).eps
    picked = np.clip(proba[np.arange(len(y_true)), y_true], eps, 1 - eps)
    return {
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_class": {
            str(name): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": cm.tolist(),
        "log_loss": float(-np.mean(np.log(picked))) if len(y_true) else 0.0,
    }
