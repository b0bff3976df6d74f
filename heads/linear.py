"""The default head: softmax regression by full-batch L-BFGS with L2 weight decay on standardized
features, in numpy on the CPU (no torch, no scipy; the training matrix may be streamed from disk)
and with torch on a GPU. Two classes still get a C x D weight: it drops into the backbone as an
``nn.Linear(D, C)``."""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import numpy as np

from .base import Head, HeadError, NotExportableError, softmax
from .linear_objective import SoftmaxProblem, fit_torch, l2_normalize
from .registry import ParamError, register_head

PREDICT_BLOCK = 65536  # rows per block when predicting: no standardized copy of X is made


def _number(value, low: float, strict: bool = False, integral: bool = False) -> bool:
    if not isinstance(value, Integral if integral else Real) or isinstance(value, bool):
        return False
    return float(value) > low if strict else float(value) >= low


# parameter -> (check, valid values in words)
RULES = {
    "weight_decay": (lambda v: _number(v, 0), "a number >= 0"),
    "max_iter": (lambda v: _number(v, 1, integral=True), "an integer >= 1"),
    "tol": (lambda v: _number(v, 0, strict=True), "a number > 0"),
    "standardize": (lambda v: isinstance(v, bool), "true or false"),
    "l2norm": (lambda v: isinstance(v, bool), "true or false"),
    "warm_start": (lambda v: isinstance(v, bool), "true or false"),
    "class_weight": (lambda v: v in (None, "balanced"), "balanced or none"),
    "device": (lambda v: isinstance(v, str) and v.split(":")[0] in ("cpu", "cuda"), "cpu, cuda or cuda:N"),
}


@register_head(
    "linear",
    main_param="weight_decay",
    grid=np.logspace(0, -6, 7).tolist(),
    description="softmax regression, full-batch L-BFGS (default)",
)
class LinearHead(Head):
    """Softmax regression, full-batch L-BFGS, L2 weight decay."""

    tensors = ("coef_", "intercept_", "shift_", "scale_")  # what io.save_head stores
    coef_: np.ndarray  # C x D, on standardized features
    intercept_: np.ndarray
    shift_: np.ndarray | None
    scale_: np.ndarray | None
    streams = True  # fits a CacheRows training matrix that does not fit in memory
    has_linear_form = True
    valid_values: ClassVar[dict[str, str]] = {key: wanted for key, (_, wanted) in RULES.items()}

    def __init__(
        self,
        weight_decay: float = 1e-3,
        standardize: bool = True,
        l2norm: bool = False,
        class_weight=None,
        max_iter: int = 200,
        tol: float = 1e-4,
        device: str = "cpu",
        warm_start: bool = False,
    ):
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.l2norm = l2norm
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.warm_start = warm_start

    def _validate_params(self) -> None:
        defaults = type(self)().get_params()
        for key, (ok, wanted) in RULES.items():
            value = getattr(self, key)
            if not ok(value):
                raise ParamError(
                    f"--param {key}={value}: linear needs {key} to be {wanted} (default {defaults[key]!r})"
                )

    def _fit(self, X, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        # the warm start: the previous fit's weights, in standardized space
        warm = self.warm_start and getattr(self, "coef_", None) is not None
        start = np.concatenate([self.coef_.ravel(), self.intercept_]).astype(np.float64) if warm else None
        if self.class_weight == "balanced":  # n / (k * n_c) per row
            _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
            balance = (len(y) / (len(counts) * counts))[inverse]
            weights = balance if weights is None else weights * balance
        if weights is not None and not weights.sum() > 0:
            raise HeadError("sample_weight sums to 0: at least one row needs a positive weight")
        problem = SoftmaxProblem(X, np.searchsorted(self.classes_, y), len(self.classes_), weights, self.l2norm)
        if self.standardize:
            problem.standardize()
        self.shift_ = problem.shift if self.standardize else None
        self.scale_ = problem.scale if self.standardize else None
        lam, max_iter, tol = float(self.weight_decay), int(self.max_iter), float(self.tol)
        if str(self.device).startswith("cuda"):
            W, b, self.n_iter_ = fit_torch(problem, lam, max_iter, tol, self.device)
        else:
            W, b, self.n_iter_ = problem.fit(lam, max_iter, tol, x0=start)
        # The solver's last value, or (torch) one more pass over the data.
        self.loss_ = getattr(problem, "last_loss", None) or problem.loss(W, b, lam)
        self.coef_, self.intercept_ = W.astype(np.float32), b.astype(np.float32)

    def decision_function(self, X) -> np.ndarray:
        """Block by block, with the standardization folded into the weights."""
        X = self._check_X(X)
        W, b = self.coef_, self.intercept_
        if self.shift_ is not None:
            W = (self.coef_ / self.scale_).astype(np.float32)
            b = (self.intercept_ - W @ self.shift_).astype(np.float32)
        out = np.empty((len(X), W.shape[0]), dtype=np.float64)
        for start in range(0, len(X), PREDICT_BLOCK):
            block = X[start : start + PREDICT_BLOCK]
            out[start : start + len(block)] = (l2_normalize(block) if self.l2norm else block) @ W.T + b
        return out

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def linear_form(self):
        if self.l2norm:
            raise NotExportableError(
                "this linear head L2-normalizes each feature row (l2norm=true), which has no linear form: "
                "refit with --param l2norm=false to export it"
            )
        self._check_X(np.zeros((1, getattr(self, "n_features_in_", 1)), np.float32))  # fitted?
        return self.coef_.astype(np.float32), self.intercept_.astype(np.float32), self.shift_, self.scale_
