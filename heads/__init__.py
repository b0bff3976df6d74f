"""Stage two: heads fitted on the cached features in seconds, loading their runs, and splits.

Importing this package registers the heads (tlx's ``linear``; scikit-learn's estimators by
name) without importing torch or scikit-learn: the linear head's ``fit`` imports torch only on
a GPU, and a scikit-learn head imports its estimator when it is built.
"""

from . import estimators as estimators  # registers logreg, ridge, knn, svm, rf, mlp and sklearn:<name>
from . import linear as linear  # registers linear (first: the default)
from .base import Head, HeadError, NotExportableError, softmax
from .registry import (
    DEFAULT_HEAD,
    HeadSpec,
    ParamError,
    UnknownHeadError,
    get_head,
    list_heads,
    parse_params,
    register_head,
)
from .runs import Run, load_run
from .training.split import split_indices

__all__ = [
    "DEFAULT_HEAD",
    "Head",
    "HeadError",
    "HeadSpec",
    "NotExportableError",
    "ParamError",
    "Run",
    "UnknownHeadError",
    "get_head",
    "list_heads",
    "load_run",
    "parse_params",
    "register_head",
    "softmax",
    "split_indices",
]
