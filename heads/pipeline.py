"""The built scikit-learn head: a ``Pipeline`` (StandardScaler, then the estimator) that also
speaks what tlx's fit-head run asks of every head: ``set_params`` by the estimator's bare names
(the sweep's), balanced class weights through ``sample_weight``, ``predict_proba`` for estimators
without one (the softmax of the decision scores), and for a linear estimator its linear form and
its state as plain arrays (saved without skops).
"""

from __future__ import annotations

import importlib
import json

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer, StandardScaler

from .base import HeadError, NotExportableError, softmax

PLAIN = (bool, int, float, str, type(None))


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

    def _linear_steps(self) -> tuple | None:
        """``(scaler or None, classifier)`` when the pipeline is an optional StandardScaler and a
        linear classifier (a decision ``X @ coef_.T + intercept_``), else None."""
        *first, (_, final) = self.steps
        scaler = first[0][1] if first else None
        if len(first) > 1 or (first and type(scaler) is not StandardScaler):
            return None
        if not isinstance(getattr(final, "coef_", None), np.ndarray):  # knn, rf, mlp: no import below
            return None
        from sklearn.linear_model._base import LinearClassifierMixin  # an SVC(kernel="linear") has coef_ too

        return (scaler, final) if isinstance(final, LinearClassifierMixin) else None

    def linear_form(self):
        """``(W, b, shift, scale)``: ``softmax(((X - shift) / scale) @ W.T + b)`` predicts the
        same classes, and gives scikit-learn's probabilities where those are the softmax of the
        decision (multinomial LogisticRegression, LinearDiscriminantAnalysis) or tlx's (ridge)."""
        parts = self._linear_steps()
        if parts is None:
            raise NotExportableError(
                f"{self.name} has no linear form: export and --init-head need a linear head "
                "(linear, logreg, ridge or a linear scikit-learn classifier)"
            )
        scaler, clf = parts
        W = np.atleast_2d(clf.coef_).astype(np.float64)
        b = np.broadcast_to(np.asarray(clf.intercept_, dtype=np.float64), (len(W),)).copy()
        if len(W) == 1:  # two classes, one decision d: softmax(0, d) = logistic(d) = P(second class)
            W, b = np.vstack([np.zeros_like(W), W]), np.array([0.0, b[0]])
        shift = scaler.mean_ if scaler is not None and scaler.with_mean else None
        scale = scaler.scale_ if scaler is not None and scaler.with_std else None
        return W, b, shift, scale

    def to_arrays(self) -> tuple[list[dict], dict[str, np.ndarray]] | None:
        """The fitted state of a linear pipeline as JSON-able steps (class, parameters, scalar
        attributes) and arrays named ``<step>.<attribute>``; None when the pipeline is not linear,
        or its state does not rebuild a pipeline that predicts the same (skops saves it then)."""
        if self._linear_steps() is None:
            return None
        steps, arrays = [], {}
        for name, step in self.steps:
            params = step.get_params(deep=False)
            try:
                if json.loads(json.dumps(params)) != params:  # a dict with int keys, a tuple ...
                    return None
            except (TypeError, ValueError):  # an object (a RandomState)
                return None
            cls = type(step)
            path = f"{cls.__module__.split('._')[0]}.{cls.__name__}"  # its public home: sklearn.linear_model
            record: dict = {"name": name, "class": path, "params": params, "attributes": {}, "binarizers": {}}
            for key, value in vars(step).items():
                if key in params:
                    continue
                if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                    arrays[f"{name}.{key}"] = np.ascontiguousarray(value)
                elif isinstance(value, (np.generic, *PLAIN)):
                    record["attributes"][key] = value.item() if isinstance(value, np.generic) else value
                elif isinstance(value, LabelBinarizer):  # RidgeClassifier's classes live in one
                    record["binarizers"][key] = value.get_params()
                # Anything else (SGDClassifier's loss object) is left out: the check below proves
                # that predicting does without it.
            steps.append(record)
        return (steps, arrays) if self._rebuilt_predicts_the_same(steps, arrays) else None

    def _rebuilt_predicts_the_same(self, steps: list[dict], arrays: dict[str, np.ndarray]) -> bool:
        probe = np.random.default_rng(0).normal(size=(8, self.n_features_in_))
        try:
            other = self.from_arrays(steps, arrays)  # a class of the user's own is refused here
            same = np.array_equal(self.predict(probe), other.predict(probe))
            for method in ("decision_function", "predict_proba"):
                same = same and np.allclose(getattr(self, method)(probe), getattr(other, method)(probe), rtol=1e-9)
            return same
        except (AttributeError, ValueError, TypeError):  # NotFittedError is both of the first two
            return False

    @classmethod
    def from_arrays(cls, steps: list[dict], arrays: dict[str, np.ndarray], **options) -> HeadPipeline:
        """The pipeline ``to_arrays`` describes. Only a StandardScaler and scikit-learn's linear
        classifiers are built; a file naming anything else raises ValueError."""
        built = []
        for step in steps:
            est = _linear_class(step["class"])(**step["params"])
            fitted = {**step["attributes"]}
            fitted.update({k.partition(".")[2]: v for k, v in arrays.items() if k.partition(".")[0] == step["name"]})
            for key, value in fitted.items():
                if not key.isidentifier() or key.startswith("__"):
                    raise ValueError(f"{key!r} is not an attribute name")
                setattr(est, key, value)
            for key, params in step["binarizers"].items():
                setattr(est, key, LabelBinarizer(**params).fit(est.classes_))
            built.append((step["name"], est))
        return cls(built, **options)


def _linear_class(path: str) -> type:
    from sklearn.linear_model._base import LinearClassifierMixin

    module, _, name = str(path).rpartition(".")
    found = getattr(importlib.import_module(module), name, None) if module.startswith("sklearn.") else None
    if found is StandardScaler or (isinstance(found, type) and issubclass(found, LinearClassifierMixin)):
        return found
    raise ValueError(f"{path} is not StandardScaler or a scikit-learn linear classifier")
