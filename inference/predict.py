"""``tlx predict``: class probabilities for image files, from a run folder.

For a head run, an image's features come from the run's feature cache when the cache already
holds an image with the same bytes (looked up by content sha256, so a copied or renamed file is
still found), and are computed with the run's feature space otherwise; then the head is applied.
Reused features are the very vectors the head was validated on, so predicting the cache's
validation images reproduces the accuracy ``tlx fit-head`` reported. A fine-tuning run changed
the backbone, so its images always go through the fine-tuned network.

Everything here is a plain function; ``tlx.cli.predict`` is a thin layer over it.
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tlx.common.atomic import write_atomic
from tlx.errors import CacheError, DatasetError, RunError, TlxError
from tlx.extractor.dataset import IMAGE_EXTENSIONS, walk_images
from tlx.heads.runs import run_cache, weights_path_for


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

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.proba.argmax(axis=1)] if len(self.paths) else []

    @property
    def scores(self) -> np.ndarray:
        return self.proba.max(axis=1) if len(self.paths) else np.zeros(0)

    def rows(self, top_k: int = 1) -> list[dict]:
        """CSV rows: ``path, label, score, p_<class>...`` plus ``top<i>, top<i>_score`` for
        ``i = 2..top_k``."""
        return prediction_rows(self.paths, self.proba, self.classes, top_k)

    def folder_accuracy(self) -> float | None:
        """Accuracy against the images' parent folder names, when every image sits in a folder
        named after one of the run's classes (for example the ``val/<class>/`` folders of the
        data the head was fitted on); None otherwise."""
        if not self.paths:
            return None
        truth = [Path(p).parent.name for p in self.paths]
        if not all(t in self.classes for t in truth):
            return None
        return float(np.mean([t == label for t, label in zip(truth, self.labels, strict=False)]))


def prediction_rows(paths: Sequence[str], proba: np.ndarray, classes: Sequence[str], top_k: int = 1) -> list[dict]:
    if top_k < 1:
        raise TlxError(f"--top-k must be at least 1, not {top_k}")
    k = min(top_k, len(classes))
    rows = []
    for path, p in zip(paths, proba, strict=False):
        order = np.argsort(-p, kind="stable")
        row = {"path": path, "label": classes[order[0]], "score": float(p[order[0]])}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, p, strict=False)})
        for i in range(1, k):
            row[f"top{i + 1}"] = classes[order[i]]
            row[f"top{i + 1}_score"] = float(p[order[i]])
        rows.append(row)
    return rows


def csv_columns(classes: Sequence[str], top_k: int = 1) -> list[str]:
    cols = ["path", "label", "score"] + [f"p_{c}" for c in classes]
    for i in range(2, min(top_k, len(classes)) + 1):
        cols += [f"top{i}", f"top{i}_score"]
    return cols


def write_csv(rows: list[dict], columns: list[str], out) -> None:
    """Write rows to a path, or to an open text stream (``sys.stdout``). Probabilities get six
    decimals; a file is written to a temporary name first and renamed into place."""

    def fmt(v):
        return f"{v:.6f}" if isinstance(v, float) else v

    def dump(fh):
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: fmt(v) for k, v in r.items()})

    if hasattr(out, "write"):
        dump(out)
        return
    write_atomic(out, dump)


# --------------------------------------------------------------------------- inputs


def expand_folders(inputs: Iterable) -> list[Path]:
    """Folders replaced by their images (recursively, with the extract rules), files kept as given."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        out.extend(walk_images(p) if p.is_dir() else [p])
    return out


def collect_images(inputs: Iterable) -> list[Path]:
    """Image files from files and folders (folders recursively, with the extract rules: hidden
    files and folders and files without an image extension are not images). A file named
    explicitly is always taken, so a mislabelled one is reported rather than silently dropped.
    The same file named twice is predicted once."""
    found, seen = [], set()
    inputs = list(inputs)
    if not inputs:
        raise DatasetError("no images given: pass image files or folders to predict")
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files = walk_images(p)
        elif p.exists() or p.is_symlink():
            files = [p]
        else:
            raise DatasetError(f"{p} does not exist: pass image files or folders of images")
        for f in files:
            key = os.path.normcase(os.path.abspath(f))
            if key not in seen:
                seen.add(key)
                found.append(f)
    if not found:
        shown = ", ".join(str(i) for i in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        raise DatasetError(f"no images found in {shown} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


# --------------------------------------------------------------------------- the run's cache


def _cached_features(run, hashes: list[str | None]) -> tuple[dict[int, np.ndarray], str]:
    """Rows of the run's cache for the inputs whose content it holds: {input index: vector}."""
    cache = run_cache(run)
    if cache is None:
        return {}, f"the run's cache {run.info.get('cache')!r} is gone; computing every image"
    from tlx.extractor.store import read_index

    try:
        index = read_index(cache)
    except CacheError as exc:
        return {}, f"{exc}; computing every image"
    if index.space.identity() != run.space.identity():
        return (
            {},
            f"{cache} now holds another feature space ({run.space.difference(index.space)}); computing every image",
        )
    row_of = index.row_of_hash()
    wanted = {i: row_of[h] for i, h in enumerate(hashes) if h is not None and h in row_of}
    if not wanted:
        return {}, ""
    return {i: v for i, v in zip(wanted, read_rows(cache, list(wanted.values())), strict=False)}, ""


def read_rows(cache: Path, rows: Sequence[int], block: int = 4096) -> np.ndarray:
    """``features[rows]`` of a cache, in the order asked, reading only the blocks of rows that
    hold some of them (memory stays flat however large the cache is)."""
    import h5py

    idx = np.asarray(rows, dtype=np.int64)
    with h5py.File(cache, "r") as f:
        ds = f["features"]
        out = np.empty((len(idx), ds.shape[1]), dtype=np.float32)
        for start in np.unique(idx // block) * block:
            mine = np.flatnonzero((idx >= start) & (idx < start + block))
            part = ds[int(start) : int(start) + block]
            out[mine] = part[idx[mine] - start]
    return out


def _hash_all(paths: Sequence[Path]) -> tuple[list[str | None], dict[int, str]]:
    from tlx.common.hashing import sha256_file

    hashes: list[str | None] = []
    failed: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            hashes.append(sha256_file(p))
        except FileNotFoundError:
            hashes.append(None)
            failed[i] = "file not found (a dangling link, or deleted while running)"
        except IsADirectoryError:
            hashes.append(None)
            failed[i] = "is a folder"
        except OSError as exc:
            hashes.append(None)
            failed[i] = f"cannot read: {exc.strerror or exc}"
    return hashes, failed


# --------------------------------------------------------------------------- predicting


def predict_paths(
    run,
    paths: Sequence,
    batch_size: int = 32,
    workers: int | None = None,
    device: str | None = "auto",
    reporter=None,
    reuse_cache: bool = True,
    engine: str = "auto",
) -> Predictions:
    """Predict image files, and the images in folders, with a loaded run (``tlx.heads.runs.load_run``).

    Unreadable images are skipped and listed in ``failed``; the others keep their input order.
    ``reporter`` is a ``tlx.common.progress.Reporter`` (progress over the images that need a network)."""
    from tlx.common.device import check_device
    from tlx.common.progress import Reporter
    from tlx.extractor.engines import check_engine

    check_device(device)
    check_engine(engine, device)
    started = time.perf_counter()
    reporter = reporter or Reporter()
    paths = expand_folders(paths)
    if batch_size < 1:
        raise TlxError(f"--batch-size must be at least 1, not {batch_size}")
    used: dict = {}
    if run.kind == "finetune":  # its network is trained and has the head inside: always eager
        proba_of, failed, n_computed = _finetuned_proba(run, paths, batch_size, workers, device, reporter)
        n_reused = 0
    else:
        proba_of, failed, n_reused, n_computed = _head_proba(
            run, paths, batch_size, workers, device, reporter, reuse_cache, engine, used
        )
    ok = [i for i in range(len(paths)) if i in proba_of]
    proba = np.stack([proba_of[i] for i in ok]) if ok else np.zeros((0, len(run.classes)))
    return Predictions(
        classes=list(run.classes),
        paths=[str(paths[i]) for i in ok],
        proba=proba,
        failed=[{"path": str(paths[i]), "reason": failed[i]} for i in sorted(failed)],
        n_reused=n_reused,
        n_computed=n_computed,
        seconds=round(time.perf_counter() - started, 3),
        engine=used,
    )


def _head_proba(run, paths, batch_size, workers, device, reporter, reuse_cache, engine="auto", used=None):
    hashes, failed = _hash_all(paths)
    cached, note = _cached_features(run, hashes) if reuse_cache else ({}, "")
    if note:
        reporter.message(f"note: {note}")
    feats: dict[int, np.ndarray] = dict(cached)
    # Compute each distinct new content once.
    first_of: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h is not None and i not in cached:
            first_of.setdefault(h, i)
    todo = sorted(first_of.values())
    if todo:
        from tlx.extractor.engine import FeatureRunner

        net = rebuild_backbone(run)
        runner = FeatureRunner(net, run.space.pooling, device=device, engine=engine, note=reporter.message)
        reporter.start(len(todo), f"computing features with {run.space.backbone}")
        try:
            for batch in runner.run([str(paths[i]) for i in todo], batch_size, workers, on_batch=reporter.advance):
                for j, reason in batch.failures:
                    failed[todo[j]] = reason
                for j, vec in zip(batch.indices, batch.features, strict=False):
                    feats[todo[j]] = vec
        finally:
            reporter.stop()
        if runner.forward.report is not None and used is not None:
            used.update(asdict(runner.forward.report))
        for i, h in enumerate(hashes):  # duplicates of a computed (or failed) content
            if h is not None and i not in feats and i not in failed:
                src = first_of[h]
                if src in feats:
                    feats[i] = feats[src]
                else:
                    failed[i] = failed[src]
    ok = sorted(feats)
    proba_of = {}
    if ok:
        X = np.stack([feats[i] for i in ok]).astype(np.float32, copy=False)
        proba_of = dict(zip(ok, full_proba(run, X), strict=False))
    return proba_of, failed, len(cached), sum(1 for i in todo if i in feats)


def rebuild_backbone(run):
    """The run's backbone, for images not in its cache. The run fixes the weights (the file it
    records, or the pretrained ones), so no error may suggest a --weights option: predict and
    export have none."""
    from tlx.extractor.extract import backbone_for_space

    weights = weights_path_for(run)
    if weights and not Path(weights).is_file():
        raise RunError(
            f"the features of {run.path} were made with the weights file {weights}, which no longer exists: "
            "put that file back to compute features of images that are not in the run's cache"
        )
    try:
        return backbone_for_space(run.space, weights)
    except TlxError as exc:
        # The extractor's messages are written for `tlx extract`, which takes --weights.
        message = re.sub(r"[,;]? (or )?pass --weights FILE", "", str(exc))
        message = re.sub(
            r" \(the features were made with --weights;[^)]*\)",
            f" (the features were made with {run.space.weights_id}: put that file back where the run records it)",
            message,
        )
        raise type(exc)(message) from None


def full_proba(run, X: np.ndarray) -> np.ndarray:
    """The head's probabilities with one column per class of the run (a class the head never saw
    in training gets probability 0)."""
    head = run.head
    p = np.asarray(head.predict_proba(X), dtype=np.float64)
    cols = head_class_indices(run)
    out = np.zeros((len(X), len(run.classes)), dtype=np.float64)
    out[:, cols] = p
    return out


def head_class_indices(run) -> list[int]:
    """Positions in ``run.classes`` of the head's ``classes_`` (the columns of predict_proba)."""
    cols = []
    for c in np.asarray(run.head.classes_).tolist():
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(run.classes):
            cols.append(int(c))
        elif str(c) in run.classes:
            cols.append(run.classes.index(str(c)))
        else:
            raise TlxError(
                f"the head in {run.path} knows class {c!r}, which is not among the run's classes {run.classes}: "
                "the run is damaged; fit it again"
            )
    return cols


def _finetuned_proba(run, paths, batch_size, workers, device, reporter):
    import torch
    from torch.utils.data import DataLoader

    from tlx.extractor.engine import ImageFiles, collate_skipping_failures, default_workers, resolve_device
    from tlx.extractor.preprocess import Normalize, ResizeCrop
    from tlx.finetune.model import load_finetuned

    module, pre = load_finetuned(run.path)
    dev = resolve_device(device)
    module = module.eval().to(dev)
    normalize = Normalize(pre).to(dev)
    failed: dict[int, str] = {}
    proba_of: dict[int, np.ndarray] = {}
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        ImageFiles([str(p) for p in paths], ResizeCrop(pre)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        prefetch_factor=4 if workers else None,
    )
    reporter.start(len(paths), f"predicting with the fine-tuned {run.space.backbone}")
    try:
        with torch.inference_mode():
            for indices, images, failures in loader:
                for j, reason in failures:
                    failed[j] = reason
                if indices:
                    p = module(normalize(images.to(dev))).double().cpu().numpy()
                    proba_of.update(zip(indices, p, strict=False))
                reporter.advance(len(indices) + len(failures))
    finally:
        reporter.stop()
    return proba_of, failed, len(paths) - len(failed)
