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
    ``__sklearn_tags__``: ``clone``, ``is_classifier`` and ``cross_val_score`` work) without
    inheriting from ``sklearn.base.BaseEstimator``, because importing scikit-learn costs about a
    second that the linear head does not need: scikit-learn is imported only when it asks."""

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

    def __sklearn_tags__(self):
        """What scikit-learn (>= 1.6) reads to tell a classifier (``is_classifier``, the default
        scorer and stratified folds of ``cross_val_score``); only scikit-learn calls this."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True),
            classifier_tags=ClassifierTags(multi_label=False),
            input_tags=InputTags(two_d_array=True, allow_nan=False),
        )

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy, as scikit-learn's classifiers define ``score``."""
        return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))

    # -- the contract -------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """``sample_weight``: one non-negative weight per row, multiplied by the class weights
        (``class_weight='balanced'``) where the head has them."""
        self._validate_params()
        X, y = self._validate_fit(X, y)
        weights = self._sample_weights(sample_weight, len(y))
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        if weights is None:
            self._fit(X, y)  # a head of one's own may predate weights
        else:
            self._fit(X, y, weights)
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
        raise NotExportableError(f"{self.name} has no linear form: export needs a linear head")

    def params_used(self) -> dict:
        """The parameters as the fitted head used them."""
        return self.get_params()

    def tensor_names(self) -> tuple:
        """The array attributes ``io.save_head`` stores (``_tensors``)."""
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
    def _fit(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate_params(self) -> None:
        """Out-of-range parameters raise an error naming the parameter (subclasses check theirs)."""

    def _sample_weights(self, sample_weight, n: int) -> np.ndarray | None:
        """The row weights to fit with: ``sample_weight`` times the class weights, or None."""
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (n,) or not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
                raise HeadError(
                    f"sample_weight must be {n} finite, non-negative numbers (one per row of X), "
                    f"got shape {sample_weight.shape}"
                )
        return sample_weight

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
