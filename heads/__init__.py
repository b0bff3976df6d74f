"""Stage two: heads fitted on the cached features in seconds, loading their runs, and splits.

Importing this package does not import torch (only the ``linear`` head's ``fit`` does).
"""

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
