"""The default head: softmax (multinomial logistic) regression fitted in torch.

Full-batch L-BFGS on the whole cached matrix, minimizing
``mean cross-entropy + weight_decay / 2 * ||W||^2`` over standardized features (the bias is not
decayed). Two classes still get a two-way softmax (a C x D weight), so the head drops into the
backbone as an ``nn.Linear(D, C)``.

On the CPU the objective and its gradient are computed in numpy (``heads/linear_objective.py``) and
minimized by ``heads/lbfgs.py``, so fitting imports neither torch nor scipy. With
``device=cuda`` the same objective is minimized by ``torch.optim.LBFGS`` on the GPU. The fitted
head predicts with numpy either way.
"""

from __future__ import annotations

import numpy as np

from tlx.heads.base import Head, NotExportableError, softmax
from tlx.heads.linear_objective import SoftmaxProblem, fit_torch, l2_normalize
from tlx.heads.registry import register_head


@register_head(
    "linear",
    main_param="weight_decay",
    grid=np.logspace(0, -6, 7).tolist(),
    description="softmax regression, full-batch L-BFGS (default)",
)
class LinearHead(Head):
    """Softmax regression, full-batch L-BFGS, L2 weight decay."""

    _tensors = ("coef_", "intercept_", "shift_", "scale_")

    def __init__(
        self,
        weight_decay: float = 1e-3,
        standardize: bool = True,
        l2norm: bool = False,
        class_weight=None,
        max_iter: int = 200,
        tol: float = 1e-4,
        device: str = "cpu",
    ):
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.l2norm = l2norm
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.l2norm:
            X = l2_normalize(X)
        if self.shift_ is not None:
            X = (X - self.shift_) / self.scale_
        return X

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.weight_decay < 0 or self.max_iter < 1 or self.tol <= 0:
            raise ValueError("weight_decay must be >= 0, max_iter >= 1 and tol > 0")
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        targets = np.fromiter((index[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        weights = self._class_weights(y)
        problem = SoftmaxProblem(X, targets, len(self.classes_), weights, l2norm=self.l2norm)
        if self.standardize:
            problem.standardize()
        self.shift_ = problem.shift if self.standardize else None
        self.scale_ = problem.scale if self.standardize else None
        if str(self.device).startswith("cuda"):
            W, b, self.n_iter_ = fit_torch(
                problem, float(self.weight_decay), int(self.max_iter), float(self.tol), self.device
            )
        else:
            W, b, self.n_iter_ = problem.fit(float(self.weight_decay), int(self.max_iter), float(self.tol))
        self.loss_ = problem.loss(W, b, float(self.weight_decay))
        self.coef_, self.intercept_ = W.astype(np.float32), b.astype(np.float32)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self._transform(X) @ self.coef_.T + self.intercept_)

    def decision_function(self, X) -> np.ndarray:
        return self._transform(self._check_X(X)) @ self.coef_.T + self.intercept_

    def linear_form(self):
        if not hasattr(self, "coef_"):
            self._check_X(np.zeros((1, 1), np.float32))  # raises "not fitted"
        if self.l2norm:
            raise NotExportableError(
                "this linear head L2-normalizes each feature row (l2norm=true), which has no linear form: "
                "refit with --param l2norm=false to export it"
            )
        return self.coef_.astype(np.float32), self.intercept_.astype(np.float32), self.shift_, self.scale_
