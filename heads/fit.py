"""``fit_head``: load a cache, split it, optionally sweep, fit one head and write its run folder.

Sweep protocol (``sweep=True``), after the CLIP linear probe: the head's main regularization
parameter runs over its registered log grid, each value scored by accuracy, then the head is
refitted on the whole training split with the best value (ties go to the stronger
regularization, which comes first in each grid).

* Data with its own train/val split: each value is fitted on train and scored on val, as in the
  CLIP protocol. The reported val accuracy is then the selection score (no separate test set).
* Data without a split: the seeded split always sets a validation part aside, and the sweep
  scores each value by stratified k-fold cross-validation *inside the training part*
  (k = 5, or fewer when a class has fewer training images). The validation part stays
  untouched until the final evaluation, so its accuracy is an honest held-out estimate.
  If a class has a single training image, k-fold is impossible and the validation part
  is used, as with a data split; ``metrics.json`` records which (``sweep.selection``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import tlx
from tlx.common.runfolder import compute_metrics, new_run_dir, plot_confusion, write_metrics
from tlx.errors import DatasetError, TlxError
from tlx.heads.registry import (
    DEFAULT_HEAD,
    HeadSpec,
    ParamError,
    get_head,
    jsonable_params,
    parse_params,
    validate_params,
)
from tlx.heads.split import split_indices

MAX_FOLDS = 5


@dataclass
class FitResult:
    run: Path
    clf: str
    val_accuracy: float
    fit_seconds: float
    params: dict
    metrics: dict = field(default_factory=dict)  # the whole metrics.json record

    def to_dict(self) -> dict:
        return {
            "run": str(self.run),
            "clf": self.clf,
            "val_accuracy": self.val_accuracy,
            "fit_seconds": self.fit_seconds,
            "params": self.params,
            "balanced_accuracy": self.metrics.get("balanced_accuracy"),
            "macro_f1": self.metrics.get("macro_f1"),
            "n_train": self.metrics.get("n_train"),
            "n_val": self.metrics.get("n_val"),
            "cache": self.metrics.get("cache"),
            "sweep": self.metrics.get("sweep"),
        }


def fit_head(
    features=None,
    clf: str = DEFAULT_HEAD,
    params=None,
    sweep: bool = False,
    class_weight: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    out=None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit head ``clf`` on a feature cache (a file, a folder or None = newest in the cache dir)."""
    from tlx.extractor.features import load_features, resolve_cache

    log = log or (lambda _msg: None)
    spec = get_head(clf)
    if not 0.0 < float(val_fraction) < 1.0:  # refused even when the data's own split makes it unused
        raise TlxError(f"--val-fraction must be between 0 and 1 (exclusive), got {float(val_fraction):g}")
    chosen = parse_params(spec, params or [])
    if sweep and spec.main_param in chosen:
        raise ParamError(
            f"--param {spec.main_param}={chosen[spec.main_param]} and --sweep both set {spec.main_param}: "
            f"drop --sweep to fit with that value, or drop the --param to let the sweep choose it"
        )
    if class_weight is not None:
        if class_weight != "balanced":
            raise ParamError(f"--class-weight must be 'balanced', got {class_weight!r}")
        chosen["class_weight"] = class_weight
    if "class_weight" in chosen and not spec.supports_class_weight and chosen["class_weight"] is not None:
        able = [n for n in _names() if get_head(n).supports_class_weight]
        raise ParamError(f"{spec.name} has no class weights: --class-weight works with {', '.join(able)}")
    validate_params(spec, chosen)  # before any data is read

    path = resolve_cache(features)
    if features is None or Path(features).is_dir():
        log(f"features: {path} (the most recent cache in {path.parent})")
    feats = load_features(path)
    train, val, split_info = split_indices(
        feats.paths, feats.y, feats.split, val_fraction, seed, hashes=feats.sha256, classes=feats.classes
    )
    # The val members themselves, so that `finetune --init-head` validates on exactly these images.
    split_info["val_sha256"] = sorted(feats.sha256[i] for i in val)
    _check_training_set(feats, train, val)
    Xtr, ytr, Xva, yva = feats.X[train], feats.y[train], feats.X[val], feats.y[val]

    sweep_record = None
    sweep_seconds = 0.0
    if sweep:
        spec.cls.prepare()
        t0 = time.perf_counter()
        sweep_record = run_sweep(spec, chosen, Xtr, ytr, Xva, yva, split_info, seed, log)
        sweep_seconds = time.perf_counter() - t0
        chosen[spec.main_param] = sweep_record["best"]

    head = spec.build(**chosen)
    spec.cls.prepare()
    t0 = time.perf_counter()
    head.fit(Xtr, ytr)
    fit_seconds = time.perf_counter() - t0
    used = jsonable_params(head.params_used())
    for key, value in jsonable_params(head.get_params()).items():
        if used.get(key) != value:
            log(f"note: {spec.name} used {key}={used.get(key)} (asked for {value}) with {len(train)} training images")
    proba = _full_proba(head, Xva, len(feats.classes))
    metrics = compute_metrics(yva, proba, feats.classes)

    run_dir = new_run_dir(spec.name, out)
    from tlx.heads.io import save_head

    save_head(head, run_dir)
    plot_confusion(metrics["confusion_matrix"], feats.classes, run_dir / "confusion.png")
    if sweep_record is not None:
        plot_sweep(sweep_record, run_dir / "sweep.png", spec.name)
    record = {
        "kind": "head",
        "clf": spec.name,
        "params": used,  # as the head used them (knn caps n_neighbors at the training rows)
        "params_set": jsonable_params(chosen),
        "val_accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "log_loss": metrics["log_loss"],
        "fit_seconds": fit_seconds,
        "sweep_seconds": sweep_seconds,
        "feature_space": feats.space.to_dict(),
        # Absolute, so predict and finetune find the cache (and its --weights file) from anywhere.
        "cache": str(Path(path).resolve()),
        "weights_path": feats.attrs.get("weights_path", ""),
        "dataset": feats.attrs.get("dataset_name") or Path(feats.dataset_root).name,
        "dataset_root": feats.dataset_root,
        "classes": list(feats.classes),
        "split": split_info,
        "n_train": len(train),
        "n_val": len(val),
        "sweep": sweep_record,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tlx_version": tlx.__version__,
    }
    write_metrics(run_dir, record)
    return FitResult(run_dir, spec.name, metrics["accuracy"], fit_seconds, record["params"], record)


def _names() -> list[str]:
    from tlx.heads.registry import list_heads

    return list(list_heads())


def _check_training_set(feats, train: np.ndarray, val: np.ndarray) -> None:
    where = f"in {feats.path}"
    present = np.unique(feats.y[train])
    if len(present) < 2:
        found = f"only class {feats.classes[present[0]]!r}" if len(present) else "no images"
        raise DatasetError(
            f"the training split {where} has {found}: a head needs at least 2 classes with training images"
        )
    missing = [feats.classes[c] for c in range(len(feats.classes)) if c not in set(present.tolist())]
    if missing:
        raise DatasetError(
            f"class {missing[0]!r} has no training images {where}: add some to its train folder or remove the class"
        )
    if len(val) == 0:
        raise DatasetError(f"the validation split {where} is empty: add images to val/, or use data without a split")


def _full_proba(head, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with one column per class of the cache (head.classes_ are label indices)."""
    proba = head.predict_proba(X)
    if proba.shape[1] == n_classes and np.array_equal(head.classes_, np.arange(n_classes)):
        return proba
    full = np.zeros((len(X), n_classes))
    full[:, np.asarray(head.classes_, dtype=np.int64)] = proba
    return full


def run_sweep(
    spec: HeadSpec, params: dict, Xtr, ytr, Xva, yva, split_info: dict, seed: int = 0, log=None
) -> dict[str, Any]:
    """Score every value of the head's grid; returns ``{param, grid, scores, best, selection}``."""
    log = log or (lambda _msg: None)
    grid = list(spec.grid)
    smallest = int(np.unique(ytr, return_counts=True)[1].min())
    use_folds = split_info.get("source") != "data" and smallest >= 2
    if use_folds:
        from sklearn.model_selection import StratifiedKFold

        k = min(MAX_FOLDS, smallest)
        folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(Xtr, ytr))
        selection = f"{k}-fold on train"
    else:
        selection = "val"
    scores = []
    for value in grid:
        p = {**params, spec.main_param: value}
        if use_folds:
            accs = [np.mean(spec.build(**p).fit(Xtr[a], ytr[a]).predict(Xtr[b]) == ytr[b]) for a, b in folds]
            score = float(np.mean(accs))
        else:
            score = float(np.mean(spec.build(**p).fit(Xtr, ytr).predict(Xva) == yva))
        scores.append(score)
        log(f"  {spec.main_param}={value:g}: accuracy {score:.4f} ({selection})")
    best = grid[int(np.argmax(scores))]  # first maximum = strongest regularization among the best
    return {"param": spec.main_param, "grid": grid, "scores": scores, "best": best, "selection": selection}


def plot_sweep(record: dict, path, head: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, scores = np.asarray(record["grid"], dtype=float), np.asarray(record["scores"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, scores, "o-")
    best = float(record["best"])
    ax.axvline(best, color="gray", linestyle="--", label=f"best {record['param']}={best:g}")
    if np.all(grid > 0):
        ax.set_xscale("log")
    ax.set_xlabel(record["param"])
    ax.set_ylabel(f"accuracy ({record['selection']})")
    ax.set_title(f"{head} sweep")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
