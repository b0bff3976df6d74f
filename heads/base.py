"""What every head shares: the scikit-learn estimator contract, input checks and the linear form.

A head is a classifier on an N x D matrix of cached features. ``__init__`` only stores its
parameters; ``fit`` validates, learns ``classes_`` and ``n_features_in_`` and returns ``self``;
``predict`` / ``predict_proba`` check that the head is fitted and that the width matches.
Nothing here imports torch.
"""

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
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Head:
    """Base class: subclasses set ``name`` (by :func:`register_head`) and implement
    ``_fit(X, y)`` and ``_predict_proba(X)``; linear heads also ``linear_form()``.

    It speaks scikit-learn's estimator protocol (``get_params``, ``set_params``, ``score``,
    ``sklearn.base.clone`` works) without inheriting from ``sklearn.base.BaseEstimator``,
    because importing scikit-learn costs about a second that the linear head does not need."""

    name = "head"
    _estimator_type = "classifier"
    _tensors: tuple = ()  # array attributes that io.save_head stores in safetensors (array-only heads)

    # -- scikit-learn's parameter protocol -------------------------------------------------------
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

    def score(self, X, y) -> float:
        """Mean accuracy, as scikit-learn's classifiers define ``score``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    # -- the contract -------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        self._validate_params()
        X, y = self._validate_fit(X, y)
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        X = self._check_X(X)
        return self._predict_proba(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def linear_form(self):
        """``(W (C x D) float32, b (C,), shift (D,) or None, scale (D,) or None)`` such that
        ``predict_proba(X) == softmax(((X - shift) / scale) @ W.T + b)``."""
        from .registry import exportable_heads

        raise NotExportableError(f"{self.name} has no linear form: export needs {_or_list(exportable_heads())}")

    def params_used(self) -> dict:
        """The parameters as the fitted head used them; a head that adapts one to the data
        (knn caps ``n_neighbors`` at the number of training rows) reports the value it used."""
        return self.get_params()

    def tensor_names(self) -> tuple:
        """The array attributes ``io.save_head`` stores (``_tensors``; a head whose arrays depend
        on its parameters, as the mlp's layers, lists them here)."""
        return self._tensors

    def arrays_fit(self, n_classes: int, width: int) -> bool:
        """Whether the arrays loaded into an array-only head (``_tensors``) have the shapes of a
        head for ``n_classes`` classes on ``width`` features (a foreign file fails this)."""
        coef = getattr(self, "coef_", None)
        return coef is not None and coef.shape == (n_classes, width)

    @classmethod
    def prepare(cls) -> None:
        """Pay one-time import costs up front, so that ``fit_seconds`` measures the fit alone."""

    # -- helpers for subclasses ---------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate_params(self) -> None:
        """Out-of-range parameters raise ParamError naming the parameter (registered heads only)."""
        from .registry import registered_head, validate_params

        spec = registered_head(self.name)
        if spec is not None and spec.cls is type(self):
            validate_params(spec, self.get_params())

    def _validate_fit(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        X = _as_matrix(X, "X")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise HeadError(f"y must be one label per row of X: got shape {y.shape} for {len(X)} rows")
        classes = np.unique(y)
        if len(classes) < 2:
            found = f"only class {classes[0]!r}" if len(classes) else "no rows"
            raise HeadError(
                f"the training set has {found}: a {self.name} head needs at least 2 classes with training images"
            )
        return X, y

    def _check_X(self, X) -> np.ndarray:
        if not hasattr(self, "n_features_in_"):
            raise HeadError(f"this {self.name} head is not fitted yet: call fit(X, y) first")
        X = _as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise HeadError(
                f"features are {X.shape[1]}-wide but this {self.name} head expects {self.n_features_in_}: "
                "they come from another feature space; use features from the backbone the head was fitted on"
            )
        return X

    def _class_weights(self, y: np.ndarray) -> np.ndarray | None:
        """Per-row weights for ``class_weight='balanced'`` (n / (k * n_c)), else None."""
        cw = getattr(self, "class_weight", None)
        if cw is None:
            return None
        if cw != "balanced":
            raise HeadError(f"class_weight must be 'balanced' or None, got {cw!r}")
        _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
        return (len(y) / (len(counts) * counts))[inv]


def standardization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)``, float32: per-feature mean and population standard deviation, as
    scikit-learn's ``StandardScaler``; a constant feature keeps a scale of 1."""
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    scale = np.where(std > 1e-6 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def _as_matrix(X, what: str):
    """A float32 2-D matrix without NaN or infinity. A matrix that reads itself from disk block
    by block (``CacheRows``) stays lazy; the finiteness check goes block by block either way, so
    it never allocates a mask the size of the data."""
    lazy = hasattr(X, "blocks")
    if not lazy:
        X = np.asarray(X, dtype=np.float32)
    if len(X.shape) != 2:
        raise HeadError(f"{what} must be a 2-D feature matrix (rows x features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise HeadError(f"{what} has no rows")
    blocks = X.blocks() if lazy else ((None, X[i : i + 65536]) for i in range(0, len(X), 65536))
    for _, block in blocks:
        if not np.isfinite(block).all():
            raise HeadError(f"{what} contains NaN or infinite values: re-run `tlx extract` on the images")
    return X


def _or_list(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]
