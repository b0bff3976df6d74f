"""A prediction's rows: :class:`Predictions`, their CSV form and writer, and the ``--out`` check."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.atomic import write_atomic
from ..common.outputs import check_output_file
from ..errors import DatasetError, TlxError


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
    """``path`` as UTF-8 text: bytes that are not UTF-8 get backslash escapes (``caf\\xe9.jpg``)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def csv_columns(classes: Sequence[str], top_k: int = 1) -> list[str]:
    cols = ["path", "label", "score"] + [f"p_{c}" for c in classes]
    for i in range(2, min(top_k, len(classes)) + 1):
        cols += [f"top{i}", f"top{i}_score"]
    return cols


def check_predictions_out(out) -> None:
    """Refuse an ``--out`` that exists, but for a predictions CSV (re-running a prediction is normal)."""
    check_output_file(Path(out), "--out", may_replace=_is_predictions_csv)


def _is_predictions_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().startswith("path,label,score")
    except (OSError, UnicodeDecodeError):
        return False


@dataclass
class StreamTotals:
    """What ``write_csv_stream`` wrote: counts, the first failures, accuracy against folders."""

    n_images: int = 0
    n_reused: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    n_failed: int = 0
    failed: list[dict] = field(default_factory=list)  # the first 1000
    hits: int = 0
    folders_are_classes: bool = True
    engine: dict = field(default_factory=dict)  # the forward engine that ran, as the first round reports it

    @property
    def folder_accuracy(self) -> float | None:
        return self.hits / self.n_images if self.n_images and self.folders_are_classes else None

    def add(self, preds: Predictions) -> None:
        self.n_images += len(preds.paths)
        self.n_reused += preds.n_reused
        self.n_computed += preds.n_computed
        self.seconds += preds.seconds
        self.n_failed += len(preds.failed)
        self.engine = self.engine or dict(preds.engine)
        self.failed += preds.failed[: max(0, 1000 - len(self.failed))]
        truth = [Path(p).parent.name for p in preds.paths]
        self.folders_are_classes = self.folders_are_classes and all(t in preds.classes for t in truth)
        self.hits += sum(t == label for t, label in zip(truth, preds.labels, strict=True))


def write_csv_stream(rounds: Iterable[Predictions], columns: list[str], out, top_k: int = 1) -> StreamTotals:
    """Write each round's rows as it comes, to a path (atomically: an interrupted run leaves no half
    CSV), an open text stream, or nowhere (``None``); DatasetError, writing nothing, when no image could be read."""
    totals = StreamTotals()

    def dump(fh) -> None:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n") if fh is not None else None
        if writer is not None:
            writer.writeheader()
        for preds in rounds:
            totals.add(preds)
            if writer is None:
                continue
            for row in preds.rows(top_k):
                writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
        if totals.n_images == 0 and totals.n_failed:
            first = totals.failed[0]
            more = f" (and {totals.n_failed - 1} more)" if totals.n_failed > 1 else ""
            raise DatasetError(
                f"none of the {totals.n_failed} image(s) could be read, nothing was predicted: "
                f"{first['path']}: {first['reason']}{more}"
            )

    if out is None or hasattr(out, "write"):
        dump(out)
    else:
        write_atomic(out, dump)
    return totals
