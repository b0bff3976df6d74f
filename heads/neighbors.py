"""``knn``: scikit-learn's KNeighborsClassifier (brute force), computed in numpy.

A k-nearest-neighbour head only stores its training rows, and its prediction is a few matrix
products, so it is reproduced here rather than imported (``sklearn.neighbors`` costs about a
second to import, most of a ``tlx fit-head --clf knn`` call). The tests compare its
probabilities with scikit-learn's. The head is saved as arrays (the standardized training rows
and their labels), so loading needs neither scikit-learn nor skops.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .base import Head
from .constraints import Range, one_of
from .registry import register_head

METRICS = ("cosine", "euclidean", "manhattan")
BLOCK_ROWS = 1024  # query rows per block: bounds the distance matrix at BLOCK_ROWS x n_train


@register_head(
    "knn",
    main_param="n_neighbors",
    grid=[32, 16, 8, 4, 2, 1],
    description="k-nearest neighbours (scikit-learn's KNeighborsClassifier, brute force in numpy), standardized",
    constraints={
        "n_neighbors": [Range(Integral, 1, None, "left")],
        "weights": [one_of("uniform", "distance")],
        "metric": [one_of(*METRICS)],
    },
)
class KnnHead(Head):
    """k-nearest neighbours on standardized features: ``weights="distance"`` weighs each
    neighbour by 1 / distance (a training row at distance 0 takes all the weight), ``"uniform"``
    counts them; ``metric`` is cosine, euclidean or manhattan."""

    _tensors = ("train_X_", "train_y_", "shift_", "scale_")

    def __init__(
        self, n_neighbors: int = 5, weights: str = "distance", metric: str = "cosine", standardize: bool = True
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.standardize = standardize

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.shift_ = self.scale_ = None
        if self.standardize:
            mean = X.mean(axis=0, dtype=np.float64)
            std = X.std(axis=0, dtype=np.float64)
            self.shift_ = mean.astype(np.float32)
            self.scale_ = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1.0), std, 1.0).astype(np.float32)
        self.train_X_ = self._transform(X).astype(np.float32)
        self.train_y_ = np.searchsorted(self.classes_, y).astype(np.int64)

    def arrays_fit(self, n_classes: int, width: int) -> bool:
        X, y = getattr(self, "train_X_", None), getattr(self, "train_y_", None)
        if X is None or y is None or X.ndim != 2 or X.shape[1] != width or not len(y) == len(X) > 0:
            return False
        return bool(y.min() >= 0 and y.max() < n_classes)

    def params_used(self) -> dict:
        # n_neighbors is capped at the number of training rows: report the k the model uses.
        rows = len(self.train_y_) if hasattr(self, "train_y_") else int(self.n_neighbors)
        return {**self.get_params(), "n_neighbors": min(int(self.n_neighbors), rows)}

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X if self.shift_ is None else (X - self.shift_) / self.scale_

    def _distances(self, Q: np.ndarray) -> np.ndarray:
        T = self.train_X_
        if self.metric == "cosine":
            Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
            Tn = T / np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-30)
            return np.maximum(1.0 - Qn.astype(np.float64) @ Tn.T.astype(np.float64), 0.0)
        if self.metric == "euclidean":
            Q64, T64 = Q.astype(np.float64), T.astype(np.float64)
            norms = (Q64 * Q64).sum(1)[:, None] + (T64 * T64).sum(1)[None, :]
            squared = norms - 2 * Q64 @ T64.T
            # The expansion leaves rounding noise where the rows are equal; call that 0, as a
            # direct difference would, so that an exact match decides alone.
            squared[squared <= 1e-12 * norms] = 0.0
            return np.sqrt(squared)
        return np.abs(Q[:, None, :].astype(np.float64) - T[None, :, :]).sum(axis=2)  # manhattan

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        k = min(int(self.n_neighbors), len(self.train_y_))
        out = np.zeros((len(X), len(self.classes_)))
        step = BLOCK_ROWS if self.metric != "manhattan" else 64  # manhattan broadcasts a 3-D block
        for start in range(0, len(X), step):
            dist = self._distances(self._transform(X[start : start + step]))
            nearest = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < dist.shape[1] else np.argsort(dist, axis=1)
            d = np.take_along_axis(dist, nearest, axis=1)
            if self.weights == "distance":
                with np.errstate(divide="ignore"):
                    w = 1.0 / d
                exact = np.isinf(w)  # a training row at distance 0: it alone decides (as scikit-learn)
                rows = exact.any(axis=1)
                w[rows] = exact[rows].astype(np.float64)
            else:
                w = np.ones_like(d)
            block = out[start : start + len(d)]
            np.add.at(block, (np.arange(len(d))[:, None], self.train_y_[nearest]), w)
        return out / out.sum(axis=1, keepdims=True)
