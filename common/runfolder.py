"""Run folders: one per fitted head or fine-tuning, with its model, plots and ``metrics.json`` (its record)."""

from __future__ import annotations

import json
import os
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import numpy as np

from ..errors import RunError
from .atomic import storage_errors, write_json_atomic
from .outputs import RUN_KINDS, RUN_RECORDS, check_output_folder

METRICS_FILE = "metrics.json"
SORTS = ("accuracy", "balanced", "n_val", "created")
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"  # all an unfinished fine-tuning has (finetune.checkpoint)


def default_runs_dir() -> Path:
    return Path(os.environ.get("TLX_RUNS_DIR", "runs"))


def new_run_dir(tag: str, out: Path | None = None) -> Path:
    """Create the run folder: ``out`` (new or empty, not inside a run or a cache), or else a fresh
    ``<runs dir>/<YYYYmmdd-HHMMSS>-<tag>`` (``-2``, ``-3``... when that name is taken)."""
    if out is not None:
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
        with suppress(FileExistsError), storage_errors(path, "create the run folder"):
            path.mkdir()
            return path
    raise RunError(f"cannot create a new run folder under {root}: too many runs named {stem}-*")


def write_metrics(run_dir, metrics: dict) -> Path:
    def plain(obj):  # numpy numbers and arrays as JSON numbers and lists; paths and the rest as text
        return obj.tolist() if isinstance(obj, (np.generic, np.ndarray)) else str(obj)

    return write_json_atomic(Path(run_dir) / METRICS_FILE, metrics, default=plain)


def read_metrics(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not path.is_file():
        missing = "no such folder" if not run_dir.is_dir() else f"it has no {METRICS_FILE}"
        raise RunError(
            f"{run_dir} is not a run folder: {missing} (pass a folder that `tlx fit-head` or `tlx runs` printed)"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} is not readable JSON ({exc}): the run is damaged; fit it again") from None
    if not isinstance(info, dict) or info.get("kind") not in RUN_KINDS:
        raise RunError(f"{path} is not a tlx run record: expected a 'kind' of {' or '.join(RUN_KINDS)}")
    return info


def list_runs(root=None, dataset: str | None = None, sort: str = "accuracy") -> list[dict]:
    """Every run under ``root`` from its ``metrics.json``, plus ``run``, ``dataset`` and ``status``
    (``done``, ``interrupted`` or ``damaged``). ``accuracy`` and ``balanced`` sort best first within
    each dataset, datasets by name: scores on different data do not compare."""
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
                records.append(_unfinished(folder, "damaged", folder / METRICS_FILE, problem=str(exc)))
                continue
            records.append({**info, "run": str(folder), "dataset": dataset_of(info), "status": "done"})
        elif (folder / LAST_CHECKPOINT).is_file():
            records.append(_unfinished(folder, "interrupted", folder / LAST_CHECKPOINT))
        elif any((folder / name).is_file() for name in RUN_RECORDS):
            why = f"{folder} has a run record but no {METRICS_FILE}: the run is damaged; fit it again"
            records.append(_unfinished(folder, "damaged", folder, problem=why))
    if dataset is not None:
        records = [r for r in records if _on_dataset(r, dataset)]
    if sort in ("created", "n_val"):  # across datasets: newest or largest first
        value = _timestamp if sort == "created" else _number
        return sorted(records, key=lambda r: (-value(r.get(sort)), r["run"]))
    metric = "val_accuracy" if sort == "accuracy" else "balanced_accuracy"
    return sorted(records, key=lambda r: (r["dataset"] is None, r["dataset"] or "", -_number(r.get(metric)), r["run"]))


def _unfinished(folder: Path, status: str, stamp: Path, **extra) -> dict:
    """A run folder without a readable record: listed (never hidden), dated by ``stamp``'s mtime."""
    kind = "finetune" if status == "interrupted" else "?"  # only a fine-tuning leaves a checkpoint
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp.stat().st_mtime))
    return dict(kind=kind, clf=kind, params={}, run=str(folder), dataset=None, status=status, created=created, **extra)


def _root_of(record: dict) -> str:
    return str(record.get("dataset_root") or (record.get("params") or {}).get("data") or "")


def dataset_of(record: dict) -> str | None:
    """The name of the dataset a run was fitted on, from its record."""
    return str(record.get("dataset") or Path(_root_of(record)).name) or None


def _on_dataset(record: dict, name: str) -> bool:
    cache, root = str(record.get("cache") or ""), _root_of(record)
    keys = {record.get("dataset"), cache, Path(cache).name, Path(cache).stem, root}
    return bool(name) and (name in keys or (root != "" and Path(name).expanduser().resolve() == Path(root)))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def _timestamp(text) -> float:
    for parse in (datetime.fromisoformat, lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S%z")):
        try:
            return parse(str(text)).timestamp()
        except (TypeError, ValueError):
            continue
    return 0.0
