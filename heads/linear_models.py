"""``logreg`` and ``ridge``: scikit-learn's LogisticRegression and RidgeClassifier, computed in
numpy.

Both are linear models with a closed or smooth convex objective, so they are reproduced here
exactly rather than imported: importing ``sklearn.linear_model`` costs more than a second,
which would dominate a ``tlx fit-head`` call that fits in a tenth of that. The tests fit both
implementations on the same data and compare coefficients and probabilities with
scikit-learn's. Features are standardized first (``standardize=True``, scikit-learn's
``StandardScaler``: mean and population standard deviation) and the fitted head is saved as
arrays (safetensors), so loading it needs neither scikit-learn nor skops.
"""

from __future__ import annotations

from numbers import Real

import numpy as np

from .constraints import Range
from .linear import SoftmaxHead
from .registry import register_head


@register_head(
    "logreg",
    main_param="C",
    grid=np.logspace(-4, 4, 9).tolist(),
    description="LogisticRegression (scikit-learn's model, L-BFGS in numpy), standardized",
    constraints={"C": [Range(Real, 0, None, "neither")]},
)
class LogregHead(SoftmaxHead):
    """scikit-learn's LogisticRegression with its L2 penalty, on standardized features: minimizes
    ``C * sum(w_i * log_loss_i) + ||W||^2 / 2``, multinomial for three or more classes and
    binomial for two, by L-BFGS in numpy."""

    def __init__(
        self,
        C: float = 1.0,
        standardize: bool = True,
        class_weight=None,
        max_iter: int = 1000,
        tol: float = 1e-4,
        warm_start: bool = False,
    ):
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start

    def _fit(self, X, y: np.ndarray) -> None:
        start = self._start()
        problem = self._problem(X, y, self._class_weights(y))
        n = len(y)
        # SoftmaxProblem minimizes mean(w * ce) + lam / 2 * ||W||^2, scikit-learn's objective
        # divided by C * n. With two classes scikit-learn fits one vector w = W1 - W0; at the
        # optimum W0 = -W1 = -w / 2, so ||W||^2 = ||w||^2 / 2 and lam doubles.
        lam = (2.0 if len(self.classes_) == 2 else 1.0) / (float(self.C) * n)
        W, b, self.n_iter_ = problem.fit(lam, int(self.max_iter), float(self.tol) / n, x0=start)
        self.coef_, self.intercept_ = W.astype(np.float32), b.astype(np.float32)


@register_head(
    "ridge",
    main_param="alpha",
    grid=np.logspace(4, -3, 8).tolist(),
    description="RidgeClassifier (scikit-learn's model, closed form in numpy); probabilities = softmax of its scores",
    constraints={"alpha": [Range(Real, 0, None, "left")]},
)
class RidgeHead(SoftmaxHead):
    """scikit-learn's RidgeClassifier on standardized features: least squares onto +-1 targets
    (one column per class, one column for two classes) with an L2 penalty ``alpha``, solved in
    closed form. It has no probabilities; tlx defines them as the softmax of its scores (two
    classes: -s and +s), which keeps it a softmax over a linear map, exportable like the others,
    but not calibrated."""

    def __init__(self, alpha: float = 1.0, standardize: bool = True, class_weight=None):
        self.alpha = alpha
        self.standardize = standardize
        self.class_weight = class_weight

    def _fit(self, X, y: np.ndarray) -> None:
        index = np.searchsorted(self.classes_, y)
        weights = self._class_weights(y)
        w = np.ones(len(y)) if weights is None else weights
        self._problem(X, y, weights)
        k = len(self.classes_)
        Y = -np.ones((len(y), k))
        Y[np.arange(len(y)), index] = 1.0
        Y = Y[:, 1:] if k == 2 else Y  # scikit-learn's LabelBinarizer: one +-1 column for two classes
        d = X.shape[1]
        gram, cross = np.zeros((d, d)), np.zeros((d, Y.shape[1]))
        total, x_sum, y_sum = w.sum(), np.zeros(d), w @ Y
        step = min(65536, X.block_rows()) if hasattr(X, "block_rows") else 65536
        for rows in range(0, len(y), step):  # block sums keep float64 copies to one block
            block = X[rows : rows + step].astype(np.float64)
            if self.shift_ is not None:
                block = (block - self.shift_) / self.scale_
            wb = w[rows : rows + step]
            gram += block.T @ (block * wb[:, None])
            cross += block.T @ (Y[rows : rows + step] * wb[:, None])
            x_sum += wb @ block
        x_mean, y_mean = x_sum / total, y_sum / total
        gram -= total * np.outer(x_mean, x_mean)  # centring, as fit_intercept does
        cross -= total * np.outer(x_mean, y_mean)
        gram[np.diag_indices(d)] += float(self.alpha)
        coef = np.linalg.solve(gram, cross).T
        intercept = y_mean - coef @ x_mean
        if k == 2:  # scores of the two classes are -s and +s
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        self.coef_, self.intercept_ = coef.astype(np.float32), intercept.astype(np.float32)
