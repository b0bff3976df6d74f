"""What tlx's own heads share: scikit-learn's estimator contract without importing scikit-learn,
and the checks of their input. Nothing here imports torch."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..errors import TlxError


class HeadError(TlxError):
    """Bad input to a head: one class only, wrong feature width, not fitted."""


class NotExportableError(TlxError):
    """The head has no linear form, so it cannot be folded into the backbone."""


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Head:
    """Subclasses implement ``_fit(X, y[, weights])`` and ``_predict_proba(X)``.

    It speaks scikit-learn's estimator protocol (``clone``, ``is_classifier`` and
    ``cross_val_score`` work) without inheriting from ``BaseEstimator``: importing scikit-learn
    costs about a second that the linear head does not need."""

    name = "head"
    _estimator_type = "classifier"

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(p.name for p in signature.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Head:
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{self.name} has no parameter {key!r}: valid keys are {', '.join(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = {k: v for k, v in self.get_params().items() if v != defaults.get(k)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_tags__(self):
        """What scikit-learn (>= 1.6) reads to tell a classifier; only scikit-learn calls this."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_label=False),
            input_tags=InputTags(two_d_array=True, allow_nan=False),
        )

    def score(self, X, y, sample_weight=None) -> float:
        return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))

    def fit(self, X, y, sample_weight=None):
        """``sample_weight``: one non-negative weight per row, times the class weights if any."""
        self._validate_params()
        X = _as_matrix(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise HeadError(f"y must be one label per row of X: got shape {y.shape} for {len(X)} rows")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            found = f"only class {self.classes_[0]!r}" if len(self.classes_) else "no rows"
            raise HeadError(
                f"the training set has {found}: a {self.name} head needs at least 2 classes with training images"
            )
        self.n_features_in_ = X.shape[1]
        if sample_weight is None:
            self._fit(X, y)  # a head of one's own may predate weights
            return self
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != (len(y),) or not np.isfinite(weights).all() or (weights < 0).any():
            raise HeadError(
                f"sample_weight must be {len(y)} finite, non-negative numbers (one per row of X), "
                f"got shape {weights.shape}"
            )
        self._fit(X, y, weights)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self._predict_proba(self._check_X(X))

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def linear_form(self):
        """``(W, b, shift or None, scale or None)`` with ``predict_proba(X) == softmax(((X - shift) /
        scale) @ W.T + b)``."""
        raise NotExportableError(f"{self.name} has no linear form: export needs a linear head")

    def params_used(self) -> dict:
        return self.get_params()

    @classmethod
    def prepare(cls) -> None:
        """Pay one-time import costs up front, so that ``fit_seconds`` measures the fit alone."""

    def _fit(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate_params(self) -> None:
        """Out-of-range parameters raise an error naming the parameter (subclasses check theirs)."""

    def _check_X(self, X) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise HeadError(f"this {self.name} head is not fitted yet: call fit(X, y) first")
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise HeadError(
                f"features are {X.shape[1]}-wide but this {self.name} head expects {self.n_features_in_}: "
                "they come from another feature space; use features from the backbone the head was fitted on"
            )
        return X


def _as_matrix(X):
    """A float32 2-D matrix without NaN or infinity. A ``CacheRows`` (read from disk block by
    block) stays lazy, and the check goes block by block: no mask the size of the data."""
    lazy = hasattr(X, "blocks")
    if not lazy:
        X = np.asarray(X, dtype=np.float32)
    if len(X.shape) != 2:
        raise HeadError(f"X must be a 2-D feature matrix (rows x features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise HeadError("X has no rows")
    blocks = X.blocks() if lazy else ((None, X[i : i + 65536]) for i in range(0, len(X), 65536))
    for _, block in blocks:
        if not np.isfinite(block).all():
            raise HeadError("X contains NaN or infinite values: re-run `tlx extract` on the images")
    return X
