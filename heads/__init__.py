"""Stage two: heads fitted on the cached features in seconds, loading their runs, and splits.

Importing it registers the heads without importing torch or scikit-learn.
"""

from . import estimators as estimators  # registers logreg, ridge, knn, svm, rf, mlp and sklearn:<name>
from . import linear as linear  # registers linear (first: the default)
from .base import Head, HeadError, NotExportableError, softmax
from .registry import HeadSpec, ParamError, UnknownHeadError, get_head, list_heads, parse_params, register_head
from .runs import load_run
from .training.split import split_indices

__all__ = [
    "Head",
    "HeadError",
    "HeadSpec",
    "NotExportableError",
    "ParamError",
    "UnknownHeadError",
    "get_head",
    "list_heads",
    "load_run",
    "parse_params",
    "register_head",
    "softmax",
    "split_indices",
]
