"""The built scikit-learn head: a ``Pipeline`` (StandardScaler, then the estimator) that also
speaks the few words tlx's fit-head run asks of every head.

It is scikit-learn's ``Pipeline`` itself, a subclass that adds:

* ``set_params(C=0.1)``: a bare name goes to the configured estimator (the sweep sets the
  head's main parameter by its own name), ``step__name`` keys work as in any pipeline;
* ``fit(X, y, sample_weight=...)``: the weights go to the estimator's ``fit``, times balanced
  class weights when the estimator has no ``class_weight`` of its own (``balance_classes``);
* ``predict_proba`` for an estimator without one (``RidgeClassifier``): the softmax of its
  decision scores (two classes: the logistic), whose argmax is its prediction;
* ``params_used()``, ``linear_form()`` (none: not exportable) and ``name``.

Saved with skops as a plain ``Pipeline`` (``io.py``), so a file holds only scikit-learn types.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from .base import HeadError, NotExportableError, softmax


class HeadPipeline(Pipeline):
    def __init__(
        self,
        steps,
        *,
        transform_input=None,
        memory=None,
        verbose=False,
        model_path: str | None = None,
        balance_classes: bool = False,
        name: str = "estimator",
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.model_path = model_path  # "svc" or "calibratedclassifiercv__estimator": what --param sets
        self.balance_classes = balance_classes
        self.name = name

    def _model_key(self) -> str:
        return self.model_path or self.steps[-1][0]

    def model(self):
        """The configured estimator (inside the calibration wrapper for ``svm``)."""
        return self.get_params()[self._model_key()]

    def set_params(self, **params):
        own = set(self._get_param_names()) | {name for name, _ in self.steps}
        routed = {(k if "__" in k or k in own else f"{self._model_key()}__{k}"): v for k, v in params.items()}
        return super().set_params(**routed)

    def params_used(self) -> dict:
        return self.model().get_params(deep=False)

    def fit(self, X, y, sample_weight=None, **params):
        y = np.asarray(y)
        classes = np.unique(y)
        if len(classes) < 2:
            found = f"only class {classes[0]!r}" if len(classes) else "no rows"
            raise HeadError(f"the training set has {found}: a {self.name} head needs at least 2 classes")
        if self.balance_classes:
            from sklearn.utils.class_weight import compute_sample_weight

            balanced = compute_sample_weight("balanced", y)
            sample_weight = balanced if sample_weight is None else balanced * np.asarray(sample_weight)
        if sample_weight is not None:
            params[f"{self.steps[-1][0]}__sample_weight"] = sample_weight
        try:
            return super().fit(X, y, **params)
        except ValueError as exc:  # scikit-learn's refusal (n_neighbors > rows ...), in one line
            raise HeadError(f"{self.name} could not be fitted: {exc}".replace("\n", " ")) from None

    def predict_proba(self, X, **params):
        try:
            if hasattr(self.steps[-1][1], "predict_proba"):
                return super().predict_proba(X, **params)
            scores = np.asarray(self.decision_function(X), dtype=np.float64)
        except ValueError as exc:  # knn with more neighbours than training rows, another width ...
            raise HeadError(f"{self.name} could not predict: {exc}".replace("\n", " ")) from None
        if scores.ndim == 1:  # two classes: the score of the second
            scores = np.stack([-scores / 2, scores / 2], axis=1)  # softmax of (-s/2, s/2) = logistic(s)
        return softmax(scores)

    def linear_form(self):
        raise NotExportableError(
            f"{self.name} has no linear form: export and --init-head need a linear head (fit one with --clf linear)"
        )
