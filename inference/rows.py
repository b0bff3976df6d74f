"""The rows of a prediction: :class:`Predictions` and their ``path, label, score, p_<class>...`` form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TlxError


@dataclass
class Predictions:
    """Probabilities of the images that could be read, in input order, and the failures."""

    classes: list[str]  # one probability column per class of the run
    paths: list[str]  # the images predicted, as given (folders expanded)
    proba: np.ndarray  # float64 (len(paths), len(classes))
    failed: list[dict] = field(default_factory=list)  # {path, reason} of skipped images
    n_reused: int = 0  # features taken from the run's cache
    n_computed: int = 0  # images run through a network
    seconds: float = 0.0
    engine: dict = field(default_factory=dict)  # the forward engine and its equality check (empty: none ran)

    @classmethod
    def join(cls, classes: Sequence[str], parts: list[Predictions]) -> Predictions:
        """The parts of one prediction (rounds, or the shares of the ranks), in order, as one."""
        return cls(
            classes=list(classes),
            paths=[p for part in parts for p in part.paths],
            proba=np.concatenate([part.proba for part in parts]) if parts else np.zeros((0, len(classes))),
            failed=[f for part in parts for f in part.failed],
            n_reused=sum(part.n_reused for part in parts),
            n_computed=sum(part.n_computed for part in parts),
            seconds=round(sum(part.seconds for part in parts), 3),
            engine=next((part.engine for part in parts if part.engine), {}),
        )

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.proba.argmax(axis=1)] if len(self.paths) else []

    def rows(self, top_k: int = 1) -> list[dict]:
        """CSV rows: ``path, label, score, p_<class>...`` plus ``top<i>, top<i>_score`` for ``i = 2..top_k``."""
        if top_k < 1:
            raise TlxError(f"--top-k must be at least 1, not {top_k}")
        rows = []
        for path, p in zip(self.paths, self.proba, strict=False):
            order = np.argsort(-p, kind="stable")
            row = {"path": printable_path(path), "label": self.classes[order[0]], "score": float(p[order[0]])}
            row.update({f"p_{c}": float(v) for c, v in zip(self.classes, p, strict=False)})
            for i in range(1, min(top_k, len(self.classes))):
                row[f"top{i + 1}"] = self.classes[order[i]]
                row[f"top{i + 1}_score"] = float(p[order[i]])
            rows.append(row)
        return rows

    def folder_accuracy(self) -> float | None:
        """Accuracy against the parent folder names, when each is one of the run's classes; else None."""
        truth = [Path(p).parent.name for p in self.paths]
        if not truth or not all(t in self.classes for t in truth):
            return None
        return float(np.mean([t == label for t, label in zip(truth, self.labels, strict=False)]))


def printable_path(path) -> str:
    """``path`` as UTF-8 text: a file name whose bytes are not UTF-8 (held as surrogate escapes)
    gets backslash escapes (``caf\\xe9.jpg``), so the CSV stays UTF-8."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def csv_columns(classes: Sequence[str], top_k: int = 1) -> list[str]:
    cols = ["path", "label", "score"] + [f"p_{c}" for c in classes]
    for i in range(2, min(top_k, len(classes)) + 1):
        cols += [f"top{i}", f"top{i}_score"]
    return cols
