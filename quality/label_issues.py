"""Likely label errors: confident learning on two sets of class probabilities, out of fold from
linear heads (an image, its views and its byte-identical copies stay in one fold; the held-out
image is scored on its center row and its views) and from a similarity-weighted vote of its
nearest neighbours. An image flagged on either is reported: each catches errors the other misses
(on the faulted sets of ``benchmarks/audit.py`` the union found more than either, or their average).
cleanlab's ``find_label_issues`` decides when installed, else the rule of its ``confident_learning``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_FOLDS = 10
PRIOR = 0.5  # pseudo-votes per class in the neighbour vote, so one neighbour is not certainty


@dataclass
class LabelIssues:
    rows: np.ndarray  # flagged rows, most likely error first
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray  # averaged probability of the given label (lower: more likely wrong)
    method: str  # "cleanlab" or "confident_learning (tlx)"
    folds: int


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per row (``StratifiedGroupKFold``: a group never straddles two folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.empty(len(y), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(splitter.split(np.zeros((len(y), 1)), y, groups)):
        fold[test] = f
    return fold


def out_of_fold_proba(
    X, y, n_classes: int, groups: np.ndarray, views=None, seed: int = 0, max_folds: int = MAX_FOLDS
) -> tuple[np.ndarray, int]:
    """``(proba (N, C), folds)``: each row scored by a linear head fitted without its fold
    (``views``: a ``ViewFeatures`` of these rows, or None)."""
    from ..heads.linear import LinearHead

    X = np.asarray(X, dtype=np.float32)
    _, first = np.unique(groups, return_index=True)
    smallest = int(np.bincount(y[first], minlength=n_classes).min())
    n_folds = min(max_folds, smallest)
    if n_folds < 2:
        return np.full((len(y), n_classes), 1.0 / n_classes), 0
    fold = grouped_folds(y, groups, n_folds, seed)
    proba = np.zeros((len(y), n_classes))
    counts = np.zeros(len(y))
    rows, owner = X, np.arange(len(y))
    if views is not None:  # a view row is trained on and scored with its image
        rows = np.concatenate([X, np.asarray(views.X, dtype=np.float32)])
        owner = np.concatenate([owner, views.image])
    row_fold = fold[owner]
    for f in range(n_folds):
        train, held = row_fold != f, row_fold == f
        head = LinearHead().fit(rows[train], y[owner[train]])
        np.add.at(proba, (owner[held][:, None], head.classes_[None, :]), head.predict_proba(rows[held]))
        np.add.at(counts, owner[held], 1)
    return proba / counts[:, None], n_folds


def neighbor_vote(index: np.ndarray, similarity: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities from the k nearest neighbours' labels, weighted by positive similarity."""
    votes = np.full((len(y), n_classes), PRIOR)
    valid = index >= 0
    weight = np.where(valid, np.clip(similarity, 0.0, None), 0.0)
    rows = np.repeat(np.arange(len(y)), index.shape[1])
    np.add.at(votes, (rows, y[np.where(valid, index, 0)].ravel()), weight.ravel())
    return votes / votes.sum(axis=1, keepdims=True)


def confident_learning(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, str]:
    """A boolean mask of likely label errors, and which implementation decided."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return _confident_learning_rule(y, proba), "confident_learning (tlx; pip install 'tlx[audit]' for cleanlab)"
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(len(y), dtype=bool), "cleanlab"
    # cleanlab wants labels 0..K-1 with every class present; absent classes are dropped here.
    sub = proba[:, present] / np.maximum(proba[:, present].sum(axis=1, keepdims=True), 1e-12)
    mask = find_label_issues(np.searchsorted(present, y), sub, filter_by="prune_by_noise_rate", n_jobs=1)
    return np.asarray(mask, dtype=bool), "cleanlab"


def _confident_learning_rule(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Flagged: another class's probability reaches that class's average self-confidence and beats
    the given label's."""
    thresholds = np.full(proba.shape[1], np.inf)
    for c in np.unique(y):
        thresholds[c] = proba[y == c, c].mean()
    above = proba >= thresholds[None, :]
    confident = np.where(above, proba, -np.inf).argmax(axis=1)
    return above.any(axis=1) & (confident != y)


def label_issues(y: np.ndarray, lin: np.ndarray, knn: np.ndarray, folds: int) -> LabelIssues:
    """Flag by confident learning on each model's probabilities; rank by their average, lowest given
    label first; the suggested class is the averaged most probable other class."""
    mask, method = confident_learning(y, knn)
    if folds:
        mask |= confident_learning(y, lin)[0]
    proba = (lin + knn) / 2.0 if folds else knn
    score = proba[np.arange(len(y)), y]
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(score[rows], kind="stable")]
    others = np.where(np.arange(proba.shape[1])[None, :] == y[:, None], -np.inf, proba)
    return LabelIssues(rows, y[rows], others[rows].argmax(axis=1), score[rows], method, folds)
