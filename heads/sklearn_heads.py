"""scikit-learn heads by name: svm, rf, mlp (logreg and ridge are in ``linear_models``, knn in
``neighbors``).

Each wraps one scikit-learn estimator, behind a ``StandardScaler`` where scaling matters
(``standardize=True``), in a ``Pipeline`` stored as ``model_``. Only that pipeline is saved
(with skops), so loading a head needs nothing but scikit-learn and numpy types.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from tlx.heads.base import Head
from tlx.heads.constraints import one_of
from tlx.heads.registry import register_head


class SklearnHead(Head):
    """Base for heads that wrap a scikit-learn estimator; subclasses implement ``_estimator()``."""

    standardize = False

    def _estimator(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _pipeline(self):
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        steps = [("scale", StandardScaler())] if self.standardize else []
        return Pipeline([*steps, ("clf", self._estimator())])

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.exceptions import ConvergenceWarning

        self._check_params(len(y))
        model = self._pipeline()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y, **self._fit_params(y))
        self.set_model(model)

    def _check_params(self, n: int) -> None:
        pass

    def estimators(self) -> list:
        """The scikit-learn estimators this head would fit, outermost first (a wrapper such as
        CalibratedClassifierCV, then the estimator it wraps); their parameter constraints apply
        to the head's parameters of the same name (``tlx.heads.registry.validate_params``)."""
        chain = [self._estimator()]
        while getattr(chain[-1], "estimator", None) is not None:
            chain.append(chain[-1].estimator)
        return chain

    def _fit_params(self, y: np.ndarray) -> dict:
        return {}

    def set_model(self, model) -> None:
        """Attach a fitted pipeline (after ``fit``, or when loading a saved head)."""
        expected = [(name, type(step)) for name, step in self._pipeline().steps]
        found = [(name, type(step)) for name, step in getattr(model, "steps", [])]
        if found != expected:
            raise ValueError(
                f"expected a pipeline of {[t.__name__ for _, t in expected]}, found {[t.__name__ for _, t in found]}"
            )
        self.model_ = model
        clf = model[-1]
        self.classes_ = np.asarray(clf.classes_)
        self.n_features_in_ = int(model.n_features_in_)
        if hasattr(clf, "coef_"):
            self.coef_ = np.atleast_2d(np.asarray(clf.coef_))  # RidgeClassifier: (D,) for two classes
            self.intercept_ = np.atleast_1d(np.asarray(clf.intercept_))

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)


@register_head(
    "rf", main_param="min_samples_leaf", grid=[32, 16, 8, 4, 2, 1], description="scikit-learn RandomForestClassifier"
)
class RfHead(SklearnHead):
    """scikit-learn RandomForestClassifier (no scaling: trees do not need it)."""

    def __init__(
        self,
        n_estimators: int = 300,
        min_samples_leaf: int = 1,
        max_features: str = "sqrt",
        class_weight=None,
        n_jobs: int = -1,
        seed: int = 0,
    ):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.seed = seed

    def _estimator(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.seed,
        )
