"""``fit_heads``: load a cache once, split it, then for each head optionally sweep (choices are made
without the held-out labels, ``sweep.py``), fit it on the whole training split and write its run
folder, scored on val, and on test when the data has a test/ split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ...cache.duplicates import duplicates_warning
from ...cache.rows import CacheRows
from ...common.metrics import compute_metrics
from ...common.mistakes import most_confused, plot_top_losses, top_losses
from ...common.plots import plot_confusion
from ...common.runfolder import new_run_dir, write_metrics
from ...errors import TlxError
from ...version import __version__
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
from .sweep import SELECT_ON, Selection, SelectionError, plan_selection, plot_sweep, run_sweep

# fit-head --views default: 0 (center rows only). Measured on ants/bees (README, benchmarks/
# accuracy.py), the views did not buy accuracy, so they are used only when asked for.
DEFAULT_VIEWS: int | None = 0
# The scores of a side (val, test) that metrics.json records.
SIDE_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "per_class", "confusion_matrix", "most_confused")


# What a FitResult reads from its metrics.json record as attributes, and what its --json line holds.
ATTRIBUTES = ("clf", "val_accuracy", "cv_accuracy", "test_accuracy", "fit_seconds", "params")
SUMMARY: tuple[str, ...] = (*ATTRIBUTES, "balanced_accuracy", "macro_f1", "n_train", "n_val", "n_test")
SUMMARY += ("n_train_views", "cache", "sweep", "selection", "duplicates")


@dataclass
class FitResult:
    """A fitted head's run folder and its metrics.json record (val_accuracy is None without val)."""

    run: Path
    metrics: dict

    def __getattr__(self, key: str) -> Any:
        if key in ATTRIBUTES:
            return self.metrics.get(key)
        raise AttributeError(key)

    def to_dict(self) -> dict:
        return {"run": str(self.run), **{key: self.metrics.get(key) for key in SUMMARY}}


def parse_heads(clf) -> list[str]:
    """``"linear"``, ``"linear,logreg,svm"`` or ``"all"`` -> head names, in the order given; a
    scikit-learn estimator or pipeline object (Python API) -> the name it is registered under."""
    if not isinstance(clf, str | list):
        from ..estimators import spec_from_estimator
        from ..registry import register_spec

        return [register_spec(spec_from_estimator(clf), replace=True).name]
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
    if sweep and not spec.grid:
        raise ParamError(f"{spec.name} has no sweep grid: drop --sweep and set its parameters with --param")
    if sweep and spec.main_param in chosen:
        raise ParamError(
            f"--param {spec.main_param}={chosen[spec.main_param]} and --sweep both set {spec.main_param}: "
            f"drop --sweep to fit with that value, or drop the --param to let the sweep choose it"
        )
    if class_weight not in (None, "balanced"):
        raise ParamError(f"--class-weight must be 'balanced', got {class_weight!r}")
    if class_weight and spec.supports_class_weight:
        chosen["class_weight"] = class_weight
    elif class_weight and not several:  # with several heads, the option is for the heads that have it
        able = [n for n in list_heads() if get_head(n).supports_class_weight]
        raise ParamError(f"{spec.name} has no class weights: --class-weight works with {', '.join(able)}")
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
    select_on: str = "cv",
    exclude=None,
) -> list[FitResult]:
    """Fit each head of ``clf`` (a name, a comma-separated list, or "all") on one load of a
    feature cache (a file, a folder or None = newest in the cache dir), into ``out`` for one head,
    ``out/<head>`` for several. ``views``: also train on views 1..N of the training images (None:
    all the cache holds). ``select_on``: how the sweep and the ranking choose, "cv" or "val".
    ``exclude``: files listing images to leave out (``tlx audit``'s audit.json or a list of paths)."""
    log = log or (lambda _msg: None)
    names = parse_heads(clf)
    several = len(names) > 1
    if not 0.0 < float(val_fraction) < 1.0:  # refused even when the data's own split makes it unused
        raise TlxError(f"--val-fraction must be between 0 and 1 (exclusive), got {float(val_fraction):g}")
    unknown = [i for i in params or [] if not any(i.partition("=")[0].strip() in get_head(n).defaults() for n in names)]
    if several and unknown:
        raise ParamError(f"--param {unknown[0]!r}: none of {', '.join(names)} has that parameter")
    chosen = {name: _params_for(get_head(name), params, sweep, class_weight, several) for name in names}
    if select_on not in SELECT_ON:
        raise SelectionError(f"--select-on must be cv or val, not {select_on!r}")
    if views is not None and views < 0:
        raise TlxError(f"--views must be 0 (center rows only) or more, not {views}")
    data = load_training_data(features, val_fraction, seed, parse_memory(max_memory), log, views, exclude)
    if data.streamed:
        held = [n for n in names if not getattr(get_head(n).cls, "streams", False)]
        if held:
            raise TlxError(
                f"{', '.join(held)} need the training rows in memory ({data.Xtr.nbytes / 2**30:.2f} GiB, "
                "over --max-memory): raise --max-memory, or use linear, which streams"
            )
    warning = duplicates_warning(data.duplicates)
    if warning:
        log(warning)
    selection = None
    if sweep or several:  # something is chosen: decided before any head is fitted
        why = "--sweep" if sweep else f"ranking {len(names)} heads"
        selection = plan_selection(select_on, data, seed, why)
    results = []
    for name in names:
        run_out = None if out is None else (Path(out) / name if several else Path(out))
        results.append(_fit_one(get_head(name), chosen[name], data, sweep, selection, run_out, log))
    return results


def fit_head(features=None, clf: Any = DEFAULT_HEAD, params=None, sweep: bool = False, **options) -> FitResult:
    """Fit one head; see :func:`fit_heads` for the options."""
    if isinstance(clf, str) and ("," in clf or clf == "all"):
        raise TlxError(f"fit_head fits one head, not {clf!r}: use fit_heads for several")
    return fit_heads(features, clf, params, sweep, **options)[0]


def _fit_one(
    spec: HeadSpec, chosen: dict, data: TrainingData, sweep: bool, selection: Selection | None, out, log
) -> FitResult:
    chosen = dict(chosen)
    sweep_record, sweep_seconds, cv_accuracy = None, 0.0, None
    if selection is not None:
        spec.cls.prepare()
        t0 = time.perf_counter()
        if sweep:
            sweep_record = run_sweep(spec, chosen, selection, log)
            chosen[spec.main_param] = sweep_record["best"]
            best_score = max(sweep_record["scores"])
        else:
            best_score = selection.score([spec.build(**chosen) for _ in range(selection.slots())])
        if selection.on == "cv":
            cv_accuracy = best_score
        sweep_seconds = time.perf_counter() - t0
    head = spec.build(**chosen)
    spec.cls.prepare()
    t0 = time.perf_counter()
    head.fit(data.Xtr, data.ytr)
    fit_seconds = time.perf_counter() - t0
    used = jsonable_params(head.params_used())
    for key, value in jsonable_params(chosen).items():
        if key in used and used[key] != value:
            log(
                f"note: {spec.name} used {key}={used.get(key)} (asked for {value}) "
                f"with {len(data.train)} training images"
            )
    run_dir = new_run_dir(spec.name.replace(":", "-"), out)
    from ..io import save_head

    save_head(head, run_dir)
    if data.fusion is not None:
        data.fusion.save(run_dir)
    scores = _evaluate(head, data, run_dir, log)
    if sweep_record is not None:
        plot_sweep(sweep_record, run_dir / "sweep.png", spec.name)
    record = _record(spec, used, chosen, scores, fit_seconds, sweep_seconds, sweep_record, data)
    record["cv_accuracy"] = cv_accuracy
    record["selection"] = selection.record() if selection is not None else None
    write_metrics(run_dir, record)
    return FitResult(run_dir, record)


def _evaluate(head, data: TrainingData, run_dir: Path, log) -> dict:
    """Scores on val and on test (None where the data has none); the plots are of val, or of test
    when there is no val."""
    classes = data.meta.classes
    sides = {"val": (data.Xva, data.yva, data.val), "test": (data.Xte, data.yte, data.test)}
    scores: dict = {"val": None, "test": None}
    for side, (X, y, rows) in sides.items():
        if not len(y):
            continue
        proba = _full_proba(head, X, len(classes))
        scores[side] = compute_metrics(y, proba, classes)
        scores[side]["most_confused"] = most_confused(scores[side]["confusion_matrix"], classes)
        if "shown" in scores:
            continue  # the plots are of the first side scored
        scores["shown"] = side
        plot_confusion(scores[side]["confusion_matrix"], classes, run_dir / "confusion.png")
        root = Path(data.meta.dataset_root)
        worst = top_losses(y, proba)  # paths only for the images shown: a held-out set can be large
        worst_paths = [str(root / data.meta.paths[rows[i]]) for i in worst]
        shown = plot_top_losses(worst_paths, y[worst], proba[worst], classes, run_dir / "top_losses.png")
        if shown["missing"]:
            log(f"note: {len(shown['missing'])} of the top-loss images have moved or gone since extraction")
    return scores


def _record(spec, used, chosen, scores, fit_seconds, sweep_seconds, sweep_record, data: TrainingData) -> dict:
    meta = data.meta
    main = scores[scores["shown"]]  # val, or test when the data has no val
    val, test = scores["val"], scores["test"]
    return {
        "kind": "head",
        "clf": spec.name,
        "params": used,  # as the head used them (knn caps n_neighbors at the training rows)
        "params_set": jsonable_params(chosen),
        "val_accuracy": val["accuracy"] if val else None,
        "test_accuracy": test["accuracy"] if test else None,
        # The scores below, the confusion matrix and the plots are of this side: val, or test without val.
        "evaluated_on": scores["shown"],
        **{key: main[key] for key in SIDE_KEYS if key != "accuracy"},
        "test": {key: test[key] for key in SIDE_KEYS} if test else None,
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
        "n_test": len(data.test),
        "duplicates": dict(data.duplicates),
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
