"""Classification metrics in numpy: what ``metrics.json`` records for every run.

scikit-learn's ``sklearn.metrics`` computes the same numbers, but importing it costs about a
second, most of a ``tlx fit-head`` call. The tests check every number against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def compute_metrics(y_true, proba, classes: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, per-class precision/recall/F1/support, the
    confusion matrix and log loss.

    ``y_true`` holds indices into ``classes``; ``proba`` has one column per class. A class with
    no prediction has precision 0, one with no image recall 0 (scikit-learn's
    ``zero_division=0``); balanced accuracy averages recall over the classes present."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), k):
        raise ValueError(f"proba must be {len(y_true)} x {k}, got {proba.shape}")
    y_pred = proba.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    hits = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    present = support > 0
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            str(name): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=False)
        },
        "confusion_matrix": cm.tolist(),
        "log_loss": float(-np.mean(np.log(clipped[np.arange(len(y_true)), y_true]))),
    }
