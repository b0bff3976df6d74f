"""Choosing without the held-out labels: the sweep of a head's main parameter, and the score that
ranks several heads: by default (``--select-on cv``) grouped k-fold cross-validation on the
training images, so that the val and test scores reported afterwards are honest; ``--select-on
val`` chooses on the val labels (the CLIP linear-probe protocol), and every record says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...common.atomic import write_atomic
from ...errors import TlxError
from ..registry import HeadSpec

MAX_FOLDS = 5
HALF_DECADE = 0.5  # the widest step of a sweep grid, in decades
SELECT_ON = ("cv", "val")


class SelectionError(TlxError):
    """A choice that cannot be made without the held-out labels (or with them, when there are none)."""


def densify(grid: Sequence) -> list:
    """Geometric midpoints inserted wherever two neighbours are more than half a decade apart
    (integers stay integers; a grid with a value <= 0 is returned as it is)."""
    values = list(grid)
    if len(values) < 2 or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in values):
        return values
    integers = all(isinstance(v, int) for v in values)
    out: list = [values[0]]
    for a, b in itertools.pairwise(values):
        decades = abs(math.log10(b / a))
        steps = max(1, math.ceil(decades / HALF_DECADE - 1e-9))
        for i in range(1, steps):
            mid = a * (b / a) ** (i / steps)
            out.append(round(mid) if integers else float(mid))
        out.append(b)
    return list(dict.fromkeys(out))  # rounding can repeat an integer


@dataclass
class Selection:
    """How choices are scored: ``cv`` (the folds, as rows of the training matrix) or ``val``."""

    on: str
    Xtr: Any
    ytr: np.ndarray
    Xva: Any = None
    yva: np.ndarray | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def describe(self) -> str:
        return f"{len(self.folds)}-fold CV on train" if self.on == "cv" else "val, optimistic"

    def record(self) -> dict:
        if self.on == "cv":
            return {"on": "cv", "folds": len(self.folds), "grouped_by": "content", "optimistic": False}
        return {"on": "val", "optimistic": True}

    def slots(self) -> int:
        """How many heads a score needs: one per fold, or one fitted on all of train."""
        return len(self.folds) if self.on == "cv" else 1

    def score(self, heads: list) -> float:
        """Accuracy of ``heads`` (as set: one per slot), fitted and scored as this selection says."""
        if self.on == "val":
            assert self.yva is not None
            return _accuracy(heads[0].fit(self.Xtr, self.ytr), self.Xva, self.yva)
        accs = [
            _accuracy(h.fit(_rows(self.Xtr, a), self.ytr[a]), _rows(self.Xtr, b), self.ytr[b])
            for h, (a, b) in zip(heads, self.folds, strict=True)
        ]
        return float(np.mean(accs))


def plan_selection(select_on: str, data, seed: int, why: str) -> Selection:
    """The selection ``why`` (e.g. "--sweep") will use on ``data`` (a ``TrainingData``)."""
    if select_on == "val":
        if not len(data.yva):
            raise SelectionError(
                f"--select-on val: {data.meta.path} has no val images to choose on (only train and test): "
                "use --select-on cv, which chooses on the training images alone"
            )
        return Selection("val", data.Xtr, data.ytr, data.Xva, data.yva)
    hashes = [data.meta.sha256[i] for i in data.train]
    folds = grouped_folds(data.ytr, hashes, data.train_group, seed, why, data.meta.classes)
    return Selection("cv", data.Xtr, data.ytr, folds=folds)


def grouped_folds(
    ytr: np.ndarray, hashes: Sequence[str], train_group, seed: int, why: str, classes: Sequence[str]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, score rows)`` of the training matrix per fold of ``StratifiedGroupKFold`` over the
    training images, k = min(5, the smallest class's distinct images), grouped by content: an image,
    its views and any byte-identical copy stay in one fold. Scored on center rows only."""
    n_images = len(hashes)
    y_img = np.asarray(ytr[:n_images])
    # Rows without a hash are their own group: only equal non-empty contents are held together.
    keys = [h or f"row:{i}" for i, h in enumerate(hashes)]
    _, group = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    counts = {int(c): len(np.unique(group[y_img == c])) for c in np.unique(y_img)}
    label, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest < 2:
        raise SelectionError(
            f"{why} chooses by k-fold cross-validation on the training images, and class {classes[label]!r} has "
            f"{smallest} distinct training image: add images of that class, or pass --select-on val to choose on "
            "the val labels (the val score is then optimistic)"
        )
    from sklearn.model_selection import StratifiedGroupKFold  # here only: a plain fit-head never pays for it

    k = min(MAX_FOLDS, smallest)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for fit_images, score_images in splitter.split(np.zeros(n_images), y_img, group):
        fit_rows = fit_images if train_group is None else np.flatnonzero(np.isin(train_group, fit_images))
        folds.append((np.sort(fit_rows), np.sort(score_images)))  # score: center rows (the first n_images)
    return folds


def run_sweep(spec: HeadSpec, params: dict, selection: Selection, log=None) -> dict[str, Any]:
    """Score every value of the head's densified grid: ``{param, grid, scores, best, selection}``."""
    log = log or (lambda _msg: None)
    grid = densify(spec.grid)
    warm = {"warm_start": True} if "warm_start" in spec.defaults() else {}
    chain = [spec.build(**params, **warm) for _ in range(selection.slots())]  # one per fold, warm along the grid
    scores = []
    for value in grid:
        for head in chain:
            head.set_params(**{spec.main_param: value})
        score = selection.score(chain)
        scores.append(score)
        log(f"  {spec.main_param}={value:g}: accuracy {score:.4f} ({selection.describe()})")
    best = grid[int(np.argmax(scores))]  # first maximum = strongest regularization among the best
    return {"param": spec.main_param, "grid": grid, "scores": scores, "best": best, "selection": selection.describe()}


def plot_sweep(record: dict, path: Path, head: str) -> None:
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


def _rows(X, idx: np.ndarray):
    """Rows of an array, or of a streamed ``CacheRows`` (``idx`` sorted, as the folds are)."""
    return X.subset(idx) if hasattr(X, "subset") else X[idx]


def _accuracy(head, X, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(head.predict(X)) == y))
