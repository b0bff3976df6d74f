"""Predictions on disk: the CSV writer and the check that ``--out`` names a file tlx may write."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..common.atomic import write_atomic
from ..common.outputs import check_output_file
from ..errors import DatasetError
from .rows import Predictions


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
