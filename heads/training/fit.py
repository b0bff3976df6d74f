"""``fit_heads``: load a cache once, split it, then for each head asked for optionally sweep, fit
it and write its run folder (``fit_head`` does one).

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

With augmented views (``views``), each fold is drawn on the training *images* (the same folds
as without views); a fold's fit uses the center rows and views of its training images, and it
is scored on the center rows of its held-out images, so no view of a held-out image is fitted.

Along the grid the heads that allow it (``linear``, ``logreg``) start each fit from the
previous value's solution (warm start), which the strongest-first order makes short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...cache.rows import CacheRows
from ...common.atomic import write_atomic
from ...common.mistakes import most_confused, plot_top_losses, top_losses
from ...common.runfolder import compute_metrics, new_run_dir, plot_confusion, write_metrics
from ...errors import TlxError
from ..registry import (
    DEFAULT_HEAD,
    HeadSpec,
    ParamError,
    UnknownHeadError,
    get_head,
    jsonable_params,
    list_heads,
    parse_params,
    validate_params,
)
from .data import TrainingData, load_training_data, parse_memory

MAX_FOLDS = 5
# fit-head --views default: 0 (center rows only). Measured on ants/bees (README, benchmarks/
# accuracy.py), the views did not buy accuracy, so they are used only when asked for.
DEFAULT_VIEWS: int | None = 0


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
            "n_train_views": self.metrics.get("n_train_views", 0),
            "cache": self.metrics.get("cache"),
            "sweep": self.metrics.get("sweep"),
        }


def parse_heads(clf: str | list[str]) -> list[str]:
    """``"linear"``, ``"linear,logreg,svm"`` or ``"all"`` -> head names, in the order given."""
    names = clf if isinstance(clf, list) else [c.strip() for c in str(clf).split(",") if c.strip()]
    if names == ["all"]:
        return list(list_heads())
    if not names:
        raise UnknownHeadError(f"--clf is empty: name a head ({', '.join(list_heads())}), several, or all")
    for name in names:
        get_head(name)  # raises, listing the known heads
    return list(dict.fromkeys(names))


def _params_for(spec: HeadSpec, items, sweep: bool, class_weight: str | None, several: bool) -> dict:
    """The typed parameters for one head; with several heads, a --param applies to the heads
    that have that key."""
    items = list(items or [])
    if several:
        defaults = spec.defaults()
        items = [i for i in items if i.partition("=")[0].strip() in defaults]
    chosen = parse_params(spec, items)
    if sweep and spec.main_param in chosen:
        raise ParamError(
            f"--param {spec.main_param}={chosen[spec.main_param]} and --sweep both set {spec.main_param}: "
            f"drop --sweep to fit with that value, or drop the --param to let the sweep choose it"
        )
    if class_weight is not None:
        if class_weight != "balanced":
            raise ParamError(f"--class-weight must be 'balanced', got {class_weight!r}")
        if not spec.supports_class_weight:
            able = [n for n in list_heads() if get_head(n).supports_class_weight]
            if several:
                return chosen  # the option is for the heads that have it
            raise ParamError(f"{spec.name} has no class weights: --class-weight works with {', '.join(able)}")
        chosen["class_weight"] = class_weight
    validate_params(spec, chosen)  # before any data is read
    return chosen


def fit_heads(
    features=None,
    clf: str | list[str] = DEFAULT_HEAD,
    params=None,
    sweep: bool = False,
    class_weight: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    out=None,
    max_memory: str | int | None = None,
    log: Callable[[str], None] | None = None,
    views: int | None = DEFAULT_VIEWS,
) -> list[FitResult]:
    """Fit each head of ``clf`` (a name, a comma-separated list, or "all") on one load of a
    feature cache (a file, a folder or None = newest in the cache dir), each into its own run
    folder: ``out`` itself for one head, ``out/<head>`` for several. ``views``: also train on
    views 1..N of the training images (None: all the cache holds; 0: none)."""
    log = log or (lambda _msg: None)
    names = parse_heads(clf)
    several = len(names) > 1
    if not 0.0 < float(val_fraction) < 1.0:  # refused even when the data's own split makes it unused
        raise TlxError(f"--val-fraction must be between 0 and 1 (exclusive), got {float(val_fraction):g}")
    unknown = [i for i in params or [] if not any(i.partition("=")[0].strip() in get_head(n).defaults() for n in names)]
    if several and unknown:
        raise ParamError(f"--param {unknown[0]!r}: none of {', '.join(names)} has that parameter")
    chosen = {name: _params_for(get_head(name), params, sweep, class_weight, several) for name in names}
    if views is not None and views < 0:
        raise TlxError(f"--views must be 0 (center rows only) or more, not {views}")
    data = load_training_data(features, val_fraction, seed, parse_memory(max_memory), log, views)
    if data.streamed:
        held = [n for n in names if not getattr(get_head(n).cls, "streams", False)]
        if held:
            raise TlxError(
                f"{', '.join(held)} need the training rows in memory ({data.Xtr.nbytes / 2**30:.2f} GiB, "
                "over --max-memory): raise --max-memory, or use linear, logreg or ridge, which stream"
            )
    results = []
    for name in names:
        run_out = None if out is None else (Path(out) / name if several else Path(out))
        results.append(_fit_one(get_head(name), chosen[name], data, sweep, seed, run_out, log))
    return results


def fit_head(features=None, clf: str = DEFAULT_HEAD, params=None, sweep: bool = False, **options) -> FitResult:
    """Fit one head; see :func:`fit_heads` for the options."""
    if "," in clf or clf == "all":
        raise TlxError(f"fit_head fits one head, not {clf!r}: use fit_heads for several")
    return fit_heads(features, clf, params, sweep, **options)[0]


def _fit_one(spec: HeadSpec, chosen: dict, data: TrainingData, sweep: bool, seed: int, out, log) -> FitResult:
    chosen = dict(chosen)
    sweep_record, sweep_seconds = None, 0.0
    if sweep:
        spec.cls.prepare()
        t0 = time.perf_counter()
        sweep_record = run_sweep(
            spec, chosen, data.Xtr, data.ytr, data.Xva, data.yva, data.split_info, seed, log, data.train_group
        )
        sweep_seconds = time.perf_counter() - t0
        chosen[spec.main_param] = sweep_record["best"]
    head = spec.build(**chosen)
    spec.cls.prepare()
    t0 = time.perf_counter()
    head.fit(data.Xtr, data.ytr)
    fit_seconds = time.perf_counter() - t0
    used = jsonable_params(head.params_used())
    for key, value in jsonable_params(head.get_params()).items():
        if used.get(key) != value:
            log(
                f"note: {spec.name} used {key}={used.get(key)} (asked for {value}) "
                f"with {len(data.train)} training images"
            )
    classes = data.meta.classes
    proba = _full_proba(head, data.Xva, len(classes))
    metrics = compute_metrics(data.yva, proba, classes)

    run_dir = new_run_dir(spec.name, out)
    from ..io import save_head

    save_head(head, run_dir)
    if data.fusion is not None:
        data.fusion.save(run_dir)
    plot_confusion(metrics["confusion_matrix"], classes, run_dir / "confusion.png")
    metrics["most_confused"] = most_confused(metrics["confusion_matrix"], classes)
    root = Path(data.meta.dataset_root)
    worst = top_losses(data.yva, proba)  # paths only for the images shown: a val set can be large
    worst_paths = [str(root / data.meta.paths[data.val[i]]) for i in worst]
    shown = plot_top_losses(worst_paths, data.yva[worst], proba[worst], classes, run_dir / "top_losses.png")
    if shown["missing"]:
        log(f"note: {len(shown['missing'])} of the top-loss images have moved or gone since extraction")
    if sweep_record is not None:
        plot_sweep(sweep_record, run_dir / "sweep.png", spec.name)
    record = _record(spec, used, chosen, metrics, fit_seconds, sweep_seconds, sweep_record, data)
    write_metrics(run_dir, record)
    return FitResult(run_dir, spec.name, metrics["accuracy"], fit_seconds, record["params"], record)


def _record(spec, used, chosen, metrics, fit_seconds, sweep_seconds, sweep_record, data: TrainingData) -> dict:
    meta = data.meta
    return {
        "kind": "head",
        "clf": spec.name,
        "params": used,  # as the head used them (knn caps n_neighbors at the training rows)
        "params_set": jsonable_params(chosen),
        "val_accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "most_confused": metrics["most_confused"],
        "log_loss": metrics["log_loss"],
        "fit_seconds": fit_seconds,
        "sweep_seconds": sweep_seconds,
        "streamed": data.streamed,
        "feature_space": meta.space.to_dict(),  # of the first cache when fused (see "fused")
        "fused": data.fusion.record() if data.fusion is not None else None,
        # Absolute, so predict and finetune find the cache (and its --weights file) from anywhere.
        "cache": str(Path(meta.path).resolve()),
        "weights_path": meta.attrs.get("weights_path", ""),
        "dataset": meta.attrs.get("dataset_name") or Path(meta.dataset_root).name,
        "dataset_root": meta.dataset_root,
        "classes": list(meta.classes),
        "split": data.split_info,
        "n_train": len(data.train),
        "n_val": len(data.val),
        # augmented views trained on (views of training images only): per image, recipe, rows
        "views": data.views,
        "n_train_views": data.views["n_rows"] if data.views else 0,
        "sweep": sweep_record,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tlx_version": __version__,
    }


def _full_proba(head, X: np.ndarray | CacheRows, n_classes: int) -> np.ndarray:
    """Probabilities with one column per class of the cache (head.classes_ are label indices)."""
    proba = head.predict_proba(X)
    if proba.shape[1] == n_classes and np.array_equal(head.classes_, np.arange(n_classes)):
        return proba
    full = np.zeros((len(X), n_classes))
    full[:, np.asarray(head.classes_, dtype=np.int64)] = proba
    return full


def run_sweep(
    spec: HeadSpec, params: dict, Xtr, ytr, Xva, yva, split_info: dict, seed: int = 0, log=None, groups=None
) -> dict[str, Any]:
    """Score every value of the head's grid; returns ``{param, grid, scores, best, selection}``.

    ``groups``: the image of each training row when views follow the center rows (see
    ``TrainingData.train_group``); folds are drawn on the images and scored on center rows."""
    log = log or (lambda _msg: None)
    grid = list(spec.grid)
    n_images = len(ytr) if groups is None else int(np.max(groups)) + 1
    smallest = int(np.unique(ytr[:n_images], return_counts=True)[1].min())
    # k-fold needs row subsets in memory; a streamed training matrix is scored on val instead.
    use_folds = split_info.get("source") != "data" and smallest >= 2 and not hasattr(Xtr, "blocks")
    folds: list = []
    if use_folds:
        from .split import stratified_folds

        k = min(MAX_FOLDS, smallest)
        # scikit-learn's StratifiedKFold(k, shuffle=True), row for row, drawn on the images
        folds = stratified_folds(ytr[:n_images], k, seed)
        if groups is not None:  # a fold fits its images' center rows and views; it scores center rows
            folds = [(np.flatnonzero(np.isin(groups, a)), b) for a, b in folds]
        selection = f"{k}-fold on train"
    else:
        selection = "val"
    warm = {"warm_start": True} if "warm_start" in spec.defaults() else {}
    chains = [spec.build(**params, **warm) for _ in (folds if use_folds else [None])]  # one per fold
    scores = []
    for value in grid:
        for head in chains:
            head.set_params(**{spec.main_param: value})
        if use_folds:
            accs = [
                np.mean(h.fit(Xtr[a], ytr[a]).predict(Xtr[b]) == ytr[b])
                for h, (a, b) in zip(chains, folds, strict=True)
            ]
            score = float(np.mean(accs))
        else:
            score = float(np.mean(chains[0].fit(Xtr, ytr).predict(Xva) == yva))
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
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=100, format="png"), mode="wb")
    plt.close(fig)
    return Path(path)
