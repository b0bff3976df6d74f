"""Stage two: heads fitted on the cached features in seconds, their run folders and splits.

Importing this package does not import torch (only the ``linear`` head's ``fit`` does).
"""

from tlx.heads.base import Head, HeadError, NotExportableError, softmax
from tlx.heads.registry import DEFAULT_HEAD, HeadSpec, ParamError, UnknownHeadError, get_head, list_heads, parse_params, register_head
from tlx.heads.runs import Run, compute_metrics, default_runs_dir, list_runs, load_run, new_run_dir, plot_confusion, write_metrics
from tlx.heads.split import split_indices

__all__ = [
    "DEFAULT_HEAD", "Head", "HeadError", "HeadSpec", "NotExportableError", "ParamError", "Run", "UnknownHeadError",
    "compute_metrics", "default_runs_dir", "get_head", "list_heads", "list_runs", "load_run", "new_run_dir",
    "parse_params", "plot_confusion", "register_head", "softmax", "split_indices", "write_metrics",
]
