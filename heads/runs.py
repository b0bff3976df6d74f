"""A run folder loaded for use: its record, classes, feature space and, for a head run, the head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.space import FeatureSpace
from ..common.runfolder import METRICS_FILE, read_metrics
from ..errors import RunError
from .io import load_head


@dataclass
class Run:
    path: Path
    info: dict  # the metrics.json record
    kind: str  # "head" or "finetune"
    classes: list[str]
    space: FeatureSpace
    head: Any = None  # the fitted head for kind "head", None for fine-tuning runs


def load_run(run_dir) -> Run:
    """Load a run folder; the head is loaded (and its file checked) for head runs."""
    run_dir = Path(run_dir)
    info = read_metrics(run_dir)
    try:
        space = FeatureSpace.from_dict(info["feature_space"])
        classes = [str(c) for c in info["classes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"{run_dir / METRICS_FILE} lacks a valid {exc} entry: the run is incomplete; fit it again"
        ) from None
    head = load_head(run_dir) if info["kind"] == "head" else None
    return Run(path=run_dir, info=info, kind=info["kind"], classes=classes, space=space, head=head)


def run_cache(run) -> Path | None:
    """The run's feature cache, when it still exists."""
    cache = run.info.get("cache")
    return Path(cache) if cache and Path(cache).is_file() else None


def weights_path_for(run) -> str | None:
    """The local weights file the run's features were made with (recorded in the run and the cache), if any."""
    if run.info.get("weights_path"):
        return run.info["weights_path"]
    cache = run_cache(run)
    if cache is None:
        return None
    from ..cache.h5format import read_attrs

    try:
        return read_attrs(cache).get("weights_path") or None
    except OSError:
        return None
