"""Run folders: one per fitted head or fine-tuning, holding its model, ``metrics.json`` and plots.

``metrics.json`` is the run's record and the only file ``tlx runs`` reads. Its keys, shared with
fine-tuning runs: kind, clf, params, val_accuracy, balanced_accuracy, macro_f1, per_class,
confusion_matrix, log_loss, fit_seconds, feature_space, cache, classes, split, n_train, n_val,
created, tlx_version. Nothing here imports torch, scikit-learn or matplotlib.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..errors import RunError
from .atomic import storage_errors, write_json_atomic
from .metrics import compute_metrics
from .plots import plot_confusion

__all__ = [
    "METRICS_FILE",
    "compute_metrics",
    "default_runs_dir",
    "list_runs",
    "new_run_dir",
    "plot_confusion",
    "read_metrics",
    "write_metrics",
]

METRICS_FILE = "metrics.json"
KINDS = ("head", "finetune")


def default_runs_dir() -> Path:
    return Path(os.environ.get("TLX_RUNS_DIR", "runs"))


def new_run_dir(tag: str, out: Path | None = None) -> Path:
    """Create the run folder: ``out`` itself when given (it must be new or empty, and not inside
    another run or a feature cache: a multi-head ``--out`` never nests runs in a run), otherwise a
    fresh ``<runs dir>/<YYYYmmdd-HHMMSS>-<tag>`` (``-2``, ``-3``... when that name is taken)."""
    if out is not None:
        from .outputs import check_output_folder

        out = Path(out)
        check_output_folder(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunError(f"--out {out} already exists and is not an empty folder: choose a new folder or remove it")
        with storage_errors(out, "create the run folder"):
            out.mkdir(parents=True, exist_ok=True)
        return out
    root = default_runs_dir()
    with storage_errors(root, "create the runs folder"):
        root.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
    for i in range(1, 1000):
        path = root / (stem if i == 1 else f"{stem}-{i}")
        try:
            with storage_errors(path, "create the run folder"):
                path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunError(f"cannot create a new run folder under {root}: too many runs named {stem}-*")


def write_metrics(run_dir, metrics: dict) -> Path:
    return write_json_atomic(Path(run_dir) / METRICS_FILE, metrics, default=_json_default)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    return str(obj)


def read_metrics(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not run_dir.is_dir():
        raise RunError(
            f"{run_dir} is not a run folder: no such folder (pass a folder that `tlx fit-head` or `tlx runs` printed)"
        )
    if not path.is_file():
        raise RunError(
            f"{run_dir} is not a run folder: it has no {METRICS_FILE} "
            "(pass a folder that `tlx fit-head` or `tlx runs` printed)"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not readable JSON ({exc}): the run is damaged; fit it again") from None
    if not isinstance(info, dict) or info.get("kind") not in KINDS:
        raise RunError(f"{path} is not a tlx run record: expected a 'kind' of {' or '.join(KINDS)}")
    return info


SORTS = ("accuracy", "balanced", "n_val", "created")
# A fine-tuning run writes metrics.json when it finishes; until then its folder holds only the
# per-epoch checkpoint (tlx.finetune.checkpoint names it: common cannot import finetune).
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


def list_runs(root=None, dataset: str | None = None, sort: str = "accuracy") -> list[dict]:
    """Every run directly under ``root`` (default: the runs dir).

    Reads only the ``metrics.json`` files. Fine-tuning runs that did not finish (a checkpoint, no
    record) are listed with status ``interrupted``; runs whose ``metrics.json`` cannot be read
    (or is missing beside a ``head.json``/``finetune.json``) with status ``damaged`` and a
    ``problem``; folders with no mark of a run are not runs. Each record is the metrics dict plus
    ``run`` (the folder), ``dataset`` and ``status`` ("done", "interrupted" or "damaged").
    ``dataset`` keeps the runs on that dataset (its name or root folder, or the cache file or its
    name). ``sort``: ``accuracy`` or ``balanced``
    (best first within each dataset, datasets by name: scores on different data do not
    compare), ``n_val`` (most validation images first) or ``created`` (newest first)."""
    if sort not in SORTS:
        raise RunError(f"--sort must be one of {', '.join(SORTS)}, not {sort!r}")
    root = Path(root) if root is not None else default_runs_dir()
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / METRICS_FILE).is_file():
            try:
                info = read_metrics(folder)
            except RunError as exc:
                records.append(_damaged(folder, str(exc)))
                continue
            records.append({**info, "run": str(folder), "dataset": dataset_of(info), "status": "done"})
        elif (folder / LAST_CHECKPOINT).is_file():
            records.append(_unfinished(folder, "finetune", "interrupted", folder / LAST_CHECKPOINT))
        elif any((folder / name).is_file() for name in RUN_RECORDS):
            why = f"{folder} has a run record but no {METRICS_FILE}: the run is damaged; fit it again"
            records.append(_damaged(folder, why))
    if dataset is not None:
        records = [r for r in records if _on_dataset(r, dataset)]
    if sort == "created":
        return sorted(records, key=lambda r: (-_timestamp(r.get("created")), r["run"]))
    if sort == "n_val":
        return sorted(records, key=lambda r: (-_number(r.get("n_val")), r["run"]))
    metric = "val_accuracy" if sort == "accuracy" else "balanced_accuracy"
    return sorted(records, key=lambda r: (r["dataset"] is None, r["dataset"] or "", -_number(r.get(metric)), r["run"]))


RUN_RECORDS = ("head.json", "finetune.json")  # what heads/io.py and finetune/report.py write beside metrics


def _unfinished(folder: Path, kind: str, status: str, stamp: Path) -> dict:
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp.stat().st_mtime))
    return {
        "kind": kind,
        "clf": kind,
        "params": {},
        "run": str(folder),
        "dataset": None,
        "status": status,
        "created": created,
    }


def _damaged(folder: Path, problem: str) -> dict:
    """A run folder whose record cannot be read: listed (never hidden), with what is wrong."""
    stamp = folder / METRICS_FILE if (folder / METRICS_FILE).is_file() else folder
    record = _unfinished(folder, "?", "damaged", stamp)
    record["problem"] = problem
    return record


def dataset_of(record: dict) -> str | None:
    """The name of the dataset a run was fitted on, from its record."""
    if record.get("dataset"):
        return str(record["dataset"])
    root = record.get("dataset_root") or (record.get("params") or {}).get("data")
    return Path(str(root)).name if root else None


def _on_dataset(record: dict, name: str) -> bool:
    cache = str(record.get("cache") or "")
    root = str(record.get("dataset_root") or (record.get("params") or {}).get("data") or "")
    keys = {record.get("dataset"), cache, Path(cache).name, Path(cache).stem, root}
    return bool(name) and (name in keys or (root != "" and Path(name).expanduser().resolve() == Path(root)))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def _timestamp(text) -> float:
    from datetime import datetime

    for parse in (datetime.fromisoformat, lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z")):
        try:
            return parse(str(text)).timestamp()
        except (TypeError, ValueError):
            continue
    return 0.0
