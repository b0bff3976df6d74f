"""scikit-learn's own classifiers as heads: short names for six of them, ``sklearn:<ClassName>``
for any classifier scikit-learn lists, and a user's estimator object (``tlx.fit_head(clf=...)``),
each behind a StandardScaler. scikit-learn is imported when a head is built, never at import."""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .registry import HeadSpec, ParamError, UnknownHeadError, register_family, register_spec

# Estimators whose warm start resumes along a sweep's grid (a forest would add no trees).
WARM_STARTS = {"LogisticRegression", "MLPClassifier"}


@dataclass(frozen=True)
class EstimatorClass:
    """Where a scikit-learn class lives, imported on first use (``spec.cls`` of these heads)."""

    module: str
    class_name: str
    streams = False  # the training rows must be in memory

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)

    def prepare(self) -> None:
        """Pay the imports up front, so that ``fit_seconds`` measures the fit alone."""
        self.load()
        importlib.import_module("tlx.heads.pipeline")


@dataclass(frozen=True)
class EstimatorSpec(HeadSpec):
    """A head that is a scikit-learn estimator behind a StandardScaler."""

    overrides: dict = field(default_factory=dict)  # tlx's deviations from the defaults
    calibrate: bool = False  # wrap in CalibratedClassifierCV(ensemble=False) for probabilities
    template: Any = None  # a user's estimator or pipeline object, cloned for each build

    def _estimator(self, params: dict):
        # skops, which saves the heads that are not linear, finds the module of each of scipy's ~400
        # ufuncs by scanning sys.modules in import order. scipy.special imported before scikit-learn
        # (which imports it anyway) sits earlier in that order, and skops' import is shorter.
        import scipy.special  # noqa: F401
        from sklearn.base import clone

        if self.template is not None:
            return clone(self.template).set_params(**params)
        try:
            return self.cls.load()(**{**self.overrides, **params})
        except TypeError as exc:  # a meta-estimator's required argument (VotingClassifier's estimators)
            raise ParamError(
                f"{self.name} needs constructor arguments that --param cannot give ({exc}): build it in Python "
                "and pass the object, tlx.fit_head(features, clf=estimator)"
            ) from None

    def defaults(self) -> dict[str, Any]:
        if _is_pipeline(self.template):
            return {}
        est = self._estimator({})
        params = est.get_params(deep=False)
        if type(est).__name__ not in WARM_STARTS:
            params.pop("warm_start", None)
        return {k: v for k, v in params.items() if not (isinstance(v, str) and v == "deprecated")}

    def build(self, **params):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from .pipeline import HeadPipeline

        if _is_pipeline(self.template):
            from sklearn.base import clone

            balance = params.get("class_weight") == "balanced"
            return HeadPipeline(clone(self.template).steps, name=self.name, balance_classes=balance)
        params, balance = dict(params), False
        if "class_weight" in params and "class_weight" not in self._estimator({}).get_params(deep=False):
            balance = params.pop("class_weight") == "balanced"  # through sample_weight instead
        final = self._estimator(params)
        if self.calibrate:  # imported only here: it pulls in model_selection
            from sklearn.calibration import CalibratedClassifierCV

            final = CalibratedClassifierCV(final, ensemble=False)
        steps = make_pipeline(StandardScaler(), final).steps
        model_path = f"{steps[-1][0]}__estimator" if self.calibrate else None
        return HeadPipeline(steps, model_path=model_path, balance_classes=balance, name=self.name)

    @property
    def exportable(self) -> bool:
        """A linear classifier: export and --init-head fold its linear form (``HeadPipeline``)."""
        if _is_pipeline(self.template):
            return False
        from sklearn.linear_model._base import LinearClassifierMixin

        return issubclass(self.cls.load(), LinearClassifierMixin)

    @property
    def supports_class_weight(self) -> bool:
        """Through ``class_weight`` where the estimator has it, else balanced ``sample_weight``."""
        if _is_pipeline(self.template):
            return "sample_weight" in inspect.signature(self.template.steps[-1][1].fit).parameters
        est = self._estimator({})
        return "class_weight" in est.get_params(deep=False) or "sample_weight" in inspect.signature(est.fit).parameters

    def validate(self, params: dict) -> None:
        """scikit-learn's own check of the values (``_validate_params``), in one tlx line."""
        from sklearn.utils._param_validation import InvalidParameterError

        head = self.build(**params)
        try:
            for _, step in head.steps:
                step._validate_params()
            head.model()._validate_params()
        except InvalidParameterError as exc:
            named = re.match(r"The '(\w+)' parameter", str(exc))
            key = named.group(1) if named else ""
            shown = f"--param {key}={params[key]}" if key in params else f"{self.name}"
            raise ParamError(f"{shown}: {exc} (`tlx heads` lists the valid values)") from None

    def describe_params(self) -> dict[str, str]:
        """scikit-learn's constraints, as its own error messages word them."""
        try:
            from sklearn.utils._param_validation import make_constraint

            rules = getattr(self.cls.load(), "_parameter_constraints", {})
            return {
                key: " or ".join(str(make_constraint(c)) for c in rule if c != "deprecated")
                for key, rule in rules.items()
                if isinstance(rule, list)
            }
        except (ImportError, ValueError, TypeError):  # a private helper that may move
            return {}


def _is_pipeline(obj) -> bool:
    return obj is not None and hasattr(obj, "steps")


# name: (module, class, main parameter, its grid, tlx's changes to the defaults, a note). Why the
# changes: logreg's default 100 iterations stop before L-BFGS converges on 1,000+ features; rf and
# mlp get random_state=0 so that the same command gives the same run; svm's probabilities come
# from CalibratedClassifierCV(ensemble=False), as scikit-learn advises now that
# SVC(probability=True) is deprecated.
SHORT_NAMES = {
    "logreg": ("linear_model", "LogisticRegression", "C", np.logspace(-4, 4, 9), {"max_iter": 1000}, ""),
    "ridge": ("linear_model", "RidgeClassifier", "alpha", np.logspace(4, -3, 8), {}, "; probabilities: softmax"),
    "knn": ("neighbors", "KNeighborsClassifier", "n_neighbors", [32, 16, 8, 4, 2, 1], {}, ""),
    "svm": ("svm", "SVC", "C", np.logspace(-3, 3, 7), {}, "; probabilities: CalibratedClassifierCV(ensemble=False)"),
    "rf": ("ensemble", "RandomForestClassifier", "min_samples_leaf", [32, 16, 8, 4, 2, 1], {"random_state": 0}, ""),
    "mlp": ("neural_network", "MLPClassifier", "alpha", np.logspace(1, -5, 7), {"random_state": 0}, ""),
}


def _register_short_names() -> None:
    for name, (module, cls, main, grid, overrides, note) in SHORT_NAMES.items():
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        description = f"scikit-learn's {cls}{f' ({changed})' if changed else ''}, standardized{note}"
        grid = tuple(np.asarray(grid).tolist())
        spec = EstimatorSpec(name, EstimatorClass(f"sklearn.{module}", cls), main, grid, description, overrides)
        register_spec(replace(spec, calibrate=name == "svm"))


_register_short_names()


def find_classifier(class_name: str) -> type | None:
    """The public scikit-learn class of that name, looked up in scikit-learn's public
    subpackages (``sklearn.__all__``): cheaper than ``all_estimators``, which imports every
    private module too, and the same classes (tests/test_estimator_heads.py checks it)."""
    import sklearn

    for module in sklearn.__all__:
        if not module.islower():
            continue
        try:
            found = getattr(importlib.import_module(f"sklearn.{module}"), class_name, None)
        except ImportError:  # a function in __all__ (clone, get_config), not a subpackage
            continue
        if isinstance(found, type):
            return found
    return None


def resolve_sklearn(class_name: str) -> EstimatorSpec:
    from sklearn.base import ClassifierMixin

    cls = find_classifier(class_name)
    # all_estimators(type_filter="classifier")'s own test: a concrete ClassifierMixin subclass
    if cls is None or not issubclass(cls, ClassifierMixin) or inspect.isabstract(cls) or class_name.startswith("_"):
        from sklearn.utils.discovery import all_estimators

        names = ", ".join(name for name, _ in all_estimators(type_filter="classifier"))
        raise UnknownHeadError(f"sklearn:{class_name} is not a scikit-learn classifier: expected one of {names}")
    module = cls.__module__.split("._")[0]  # its public home: sklearn.ensemble, not sklearn.ensemble._forest
    name = f"sklearn:{class_name}"
    return EstimatorSpec(name, EstimatorClass(module, class_name), "", (), f"scikit-learn's {class_name}")


register_family(
    "sklearn",
    resolve_sklearn,
    "any scikit-learn classifier by its class name, e.g. --clf sklearn:HistGradientBoostingClassifier, "
    "standardized; --param sets its constructor arguments (scikit-learn's defaults otherwise)",
)


def spec_from_estimator(estimator) -> EstimatorSpec:
    """A head spec for a user's scikit-learn classifier (standardized first, as the named heads
    are) or pipeline (taken as it is), cloned for each fit, never changed."""
    from sklearn.base import is_classifier

    if not is_classifier(estimator):
        raise UnknownHeadError(
            f"clf={type(estimator).__name__} is not a scikit-learn classifier: pass a head name, a classifier "
            "or a pipeline ending in one"
        )
    final = estimator.steps[-1][1] if _is_pipeline(estimator) else estimator
    module = type(final).__module__.split("._")[0]
    name = f"estimator:{type(final).__name__}"
    return EstimatorSpec(
        name, EstimatorClass(module, type(final).__name__), "", (), f"{estimator!r}", template=estimator
    )
