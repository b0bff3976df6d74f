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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..common.atomic import write_atomic
from ..errors import CacheError, DatasetError, RunError, TlxError
from ..extractor.discovery import IMAGE_EXTENSIONS, not_regular, walk_images
from ..heads.runs import run_cache, weights_path_for


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
    rank: int = 0  # under torchrun, only rank 0's Predictions hold the rows of every rank
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


def printable_path(path) -> str:
    """``path`` as UTF-8 text: a file name whose bytes are not UTF-8 (Python holds them as
    surrogate escapes) gets backslash escapes (``caf\\xe9.jpg``), so the CSV stays UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def prediction_rows(paths: Sequence[str], proba: np.ndarray, classes: Sequence[str], top_k: int = 1) -> list[dict]:
    if top_k < 1:
        raise TlxError(f"--top-k must be at least 1, not {top_k}")
    k = min(top_k, len(classes))
    rows = []
    for path, p in zip(paths, proba, strict=False):
        order = np.argsort(-p, kind="stable")
        row = {"path": printable_path(path), "label": classes[order[0]], "score": float(p[order[0]])}
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


CSV_HEADER = "path,label,score"


def check_predictions_out(out) -> None:
    """Refuse an ``--out`` that is an image, a cache or a run's file, or any existing file but a
    predictions CSV that tlx wrote (that one may be replaced: re-running a prediction is normal)."""
    from ..common.outputs import check_output_file

    check_output_file(Path(out), "--out", may_replace=_is_predictions_csv)


def _is_predictions_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().startswith(CSV_HEADER)
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
    """Write each round's rows as it comes (memory holds one round), to a path (a temporary file
    renamed into place at the end: an interrupted run leaves no half CSV), an open text stream,
    or nowhere (``out=None``, for ``--json`` alone). Raises DatasetError, writing nothing, when no
    image at all could be read."""
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
    """Rows of the run's cache for the inputs whose content it holds: {input index: vector},
    hashes and vectors taken from one open version of the cache (``tlx.cache.reader``)."""
    cache = run_cache(run)
    if cache is None:
        return {}, f"the run's cache {run.info.get('cache')!r} is gone; computing every image"
    from ..cache.reader import open_snapshot
    from ..cache.store import index_of

    try:
        with open_snapshot(cache) as snap:
            index = index_of(snap.index, cache)
            if index.space.identity() != run.space.identity():
                return (
                    {},
                    f"{cache} now holds another feature space ({run.space.difference(index.space)}); "
                    "computing every image",
                )
            row_of = index.row_of_hash()
            wanted = {i: row_of[h] for i, h in enumerate(hashes) if h is not None and h in row_of}
            if not wanted:
                return {}, ""
            vectors = read_rows(snap, list(wanted.values()))
    except CacheError as exc:
        return {}, f"{exc}; computing every image"
    return dict(zip(wanted, vectors, strict=True)), ""


def read_rows(cache, rows: Sequence[int], block: int = 4096) -> np.ndarray:
    """``features[rows]`` of a cache (a path, or an open ``Snapshot`` of it), in the order asked,
    reading ``block`` rows at a time (memory stays flat however large the cache is)."""
    from ..cache.reader import Snapshot, open_snapshot

    snap = cache if isinstance(cache, Snapshot) else open_snapshot(cache)
    try:
        table = snap.table("features")
        idx = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(idx), table.width), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        for start in range(0, len(idx), block):
            mine = order[start : start + block]
            out[mine] = table.read(idx[mine])
        return out
    finally:
        if snap is not cache:
            snap.close()


def _hash_all(paths: Sequence[Path]) -> tuple[list[str | None], dict[int, str]]:
    from ..common.hashing import sha256_file

    hashes: list[str | None] = []
    failed: dict[int, str] = {}
    for i, p in enumerate(paths):
        why = not_regular(p)
        if why:  # a FIFO named on the command line would block the read forever
            hashes.append(None)
            failed[i] = why
            continue
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


CHUNK = 8192  # images per round: memory holds one round's rows, however many images there are


def predict_paths(
    run,
    paths: Sequence,
    batch_size: int = 32,
    workers: int | None = None,
    device: str | None = "auto",
    reporter=None,
    reuse_cache: bool = True,
    tta: bool = False,
    engine: str = "auto",
) -> Predictions:
    """Predict image files, and the images in folders, with a loaded run (``tlx.heads.runs.load_run``).
    ``tta``: average the probabilities of each image's center view and its mirror image (head runs).

    Unreadable images are skipped and listed in ``failed``; the others keep their input order.
    ``reporter`` is a ``tlx.common.progress.Reporter`` (progress over the images that need a network).
    For very many images, :func:`predict_chunks` yields the same in rounds of bounded size."""
    chunks = list(predict_chunks(run, paths, batch_size, workers, device, reporter, reuse_cache, tta, engine))
    if not chunks:
        return Predictions(list(run.classes), [], np.zeros((0, len(run.classes))))
    return Predictions(
        classes=list(run.classes),
        paths=[p for c in chunks for p in c.paths],
        proba=np.concatenate([c.proba for c in chunks]),
        failed=[f for c in chunks for f in c.failed],
        n_reused=sum(c.n_reused for c in chunks),
        n_computed=sum(c.n_computed for c in chunks),
        seconds=round(sum(c.seconds for c in chunks), 3),
        rank=chunks[0].rank,
        engine=next((c.engine for c in chunks if c.engine), {}),
    )


def predict_chunks(
    run,
    paths: Sequence,
    batch_size: int = 32,
    workers: int | None = None,
    device: str | None = "auto",
    reporter=None,
    reuse_cache: bool = True,
    tta: bool = False,
    engine: str = "auto",
    chunk: int = CHUNK,
) -> Iterator[Predictions]:
    """:func:`predict_paths` in rounds of ``chunk`` images, in input order: a caller that writes
    each round out (``tlx predict`` does) holds one round's rows at a time. The network is built
    once for all rounds. Under torchrun each round is shared among the ranks and gathered on
    rank 0; the other ranks yield empty rounds."""
    from ..common.device import check_device
    from ..common.progress import Reporter
    from ..extractor.engines import check_engine

    check_device(device)
    check_engine(engine, device)
    reporter = reporter or Reporter()
    paths = expand_folders(paths)
    if batch_size < 1:
        raise TlxError(f"--batch-size must be at least 1, not {batch_size}")
    if tta and run.kind == "finetune":
        raise TlxError(
            f"--tta averages cached-feature views and works with head runs; {run.path} is a fine-tuning run: drop --tta"
        )
    from ..extractor import distributed

    ranks = distributed.setup(device)  # under torchrun: each rank predicts a contiguous share
    finished = False
    try:
        for start in range(0, len(paths), chunk):
            round_paths = paths[start : start + chunk]
            how = _How(batch_size, workers, device, reporter, reuse_cache, engine=engine)
            yield _predict_round(run, round_paths, ranks, how, tta)
        finished = True
    finally:
        distributed.teardown(ranks, finished)


def _predict_round(run, paths, ranks, how: _How, tta: bool) -> Predictions:
    from ..extractor import distributed

    started = time.perf_counter()
    mine = distributed.shard(len(paths), ranks)
    share = [paths[i] for i in mine]
    if run.kind == "finetune":  # its network is trained and has the head inside: always eager
        proba_of, failed, n_computed = _finetuned_proba(
            run, share, how.batch_size, how.workers, how.device, how.reporter
        )
        n_reused = 0
    else:
        proba_of, failed, n_reused, n_computed = _head_proba(run, share, how, tta)
    _fail_non_finite(proba_of, failed, run)
    shares = distributed.gather(
        ranks, (mine.start, proba_of, failed, n_reused, n_computed), "collecting the predictions"
    )
    if not ranks.is_main:
        return Predictions(list(run.classes), [], np.zeros((0, len(run.classes))), rank=ranks.rank)
    proba_of, failed, n_reused, n_computed = {}, {}, 0, 0
    for start, p_of, f_of, reused, computed in shares:  # back to positions in ``paths``
        proba_of.update({start + i: v for i, v in p_of.items()})
        failed.update({start + i: r for i, r in f_of.items()})
        n_reused, n_computed = n_reused + reused, n_computed + computed
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
        engine=dict(how.used),
    )


def _fail_non_finite(proba_of: dict, failed: dict, run) -> None:
    """Rows whose probabilities are NaN or infinite get no label (argmax of NaN is a class
    picked by accident): they move to the failures, with the reason."""
    for i in [i for i, p in proba_of.items() if not np.all(np.isfinite(p))]:
        del proba_of[i]
        failed[i] = (
            f"the run {run.path} gave NaN/inf probabilities for this image (its weights or features are not "
            "finite numbers): no label; fit or fine-tune the run again"
        )


def _memo(run, name: str, build):
    """Build something once per loaded run (the fine-tuned module) across rounds."""
    cache = run.__dict__.setdefault("_built", {})
    if name not in cache:
        cache[name] = build()
    return cache[name]


_BACKBONES: dict[tuple, object] = {}  # (feature space key, weights path) -> network, across rounds


def _backbone_for(run):
    """The backbone of one feature space (of a run, or of one block of a fused run), built once
    per process: ``tlx predict`` computes new images in rounds and must not rebuild it each time."""
    key = (run.space.key, str(weights_path_for(run)))
    if key not in _BACKBONES:
        if len(_BACKBONES) >= 4:  # a long-lived process predicting with many runs
            _BACKBONES.pop(next(iter(_BACKBONES)))
        _BACKBONES[key] = rebuild_backbone(run)
    return _BACKBONES[key]


@dataclass
class _How:
    """How features are computed: the loader's settings, whether to reuse the cache, and
    whether the images are mirrored (the flip half of --tta)."""

    batch_size: int
    workers: int | None
    device: str | None
    reporter: Any  # a tlx.common.progress.Reporter
    reuse_cache: bool
    flip: bool = False
    engine: str = "auto"  # --engine for the frozen forward pass
    used: dict = field(default_factory=dict)  # the engine that ran and its equality check


def _head_proba(run, paths, how: _How, tta: bool = False):
    """With ``tta``, the probabilities of the center view and of its mirror image are averaged;
    the mirror is never in a cache, so it always goes through the backbone."""
    hashes, failed = _hash_all(paths)
    feats, n_reused, n_computed = _head_features(run, paths, hashes, failed, how)
    flipped = _head_features(run, paths, hashes, failed, replace(how, reuse_cache=False, flip=True))[0] if tta else {}
    ok = sorted(i for i in feats if i not in failed and (not tta or i in flipped))
    proba_of = {}
    if ok:
        X = np.stack([feats[i] for i in ok]).astype(np.float32, copy=False)
        proba = full_proba(run, X)
        if tta:
            proba = (proba + full_proba(run, np.stack([flipped[i] for i in ok]).astype(np.float32))) / 2
        proba_of = dict(zip(ok, proba, strict=False))
    return proba_of, failed, n_reused, n_computed


def _head_features(run, paths, hashes, failed, how: _How):
    """``({input index: vector}, n_reused, n_computed)`` in the run's (possibly fused) space."""
    blocks = fused_blocks(run)
    if blocks is None:
        feats, n_reused, n_computed, _ = _block_features(run, paths, hashes, failed, how)
        return feats, n_reused, n_computed
    # a fused run: each block from its own cache or backbone, side by side, standardized
    from ..heads.training.fusion import load_standardization

    parts = [_block_features(b, paths, hashes, failed, how) for b in blocks]
    mean, scale = load_standardization(run.path)
    ok_all = [i for i in parts[0][0] if all(i in p[0] for p in parts) and i not in failed]
    feats = {i: (np.concatenate([p[0][i] for p in parts]) - mean) / scale for i in ok_all}
    n_reused = sum(1 for i in ok_all if all(i in p[3] for p in parts))
    return feats, n_reused, len(ok_all) - n_reused


def fused_blocks(run) -> list | None:
    """For a fused run, one run-like record per block (its space, cache and weights); else None."""
    fused = run.info.get("fused")
    if not fused:
        return None
    from ..cache.space import FeatureSpace

    return [
        replace(
            run,
            info={"cache": b["cache"], "weights_path": b.get("weights_path", "")},
            space=FeatureSpace.from_dict(b["feature_space"]),
        )
        for b in fused["blocks"]
    ]


def _block_features(run, paths, hashes, failed, how: _How):
    """``({input index: vector}, n_reused, n_computed, reused indices)`` of one feature space:
    from the run's cache when it holds the content, else through the backbone. ``failed`` gains
    the images that could not be read."""
    batch_size, workers, device, reporter = how.batch_size, how.workers, how.device, how.reporter
    cached, note = _cached_features(run, hashes) if how.reuse_cache else ({}, "")
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
        from ..extractor.engine import FeatureRunner

        net = _backbone_for(run)
        # the run's own precision: an fp16 feature space is computed in fp16 here too
        runner = FeatureRunner(
            net,
            run.space.pooling,
            device=device,
            precision=run.space.precision,
            stages=run.space.stages,
            engine=how.engine,
            note=reporter.message,
        )
        files = None
        if how.flip:  # the mirror view of --tta
            from ..extractor.engine import ImageFiles
            from ..extractor.preprocess import ResizeCrop

            files = ImageFiles([str(paths[i]) for i in todo], ResizeCrop(run.space.preprocessing, flip=True))
        what = "mirrored images" if how.flip else "features"
        reporter.start(len(todo), f"computing {what} with {run.space.backbone}")
        try:
            todo_paths = [str(paths[i]) for i in todo]
            for batch in runner.run(todo_paths, batch_size, workers, on_batch=reporter.advance, files=files):
                for j, reason in batch.failures:
                    failed[todo[j]] = reason
                # as the cache stores them: a float16 cache holds float32 vectors rounded to half
                stored = batch.features.astype(run.space.store_dtype).astype(np.float32)
                for j, vec in zip(batch.indices, stored, strict=True):
                    feats[todo[j]] = vec
        finally:
            reporter.stop()
        if runner.forward.report is not None:
            how.used.update(asdict(runner.forward.report))
        for i, h in enumerate(hashes):  # duplicates of a computed (or failed) content
            if h is not None and i not in feats and i not in failed:
                src = first_of[h]
                if src in feats:
                    feats[i] = feats[src]
                else:
                    failed[i] = failed[src]
    return feats, len(cached), sum(1 for i in todo if i in feats), set(cached)


def rebuild_backbone(run):
    """The run's backbone, for images not in its cache. The run fixes the weights (the file it
    records, or the pretrained ones), so no error may suggest a --weights option: predict and
    export have none."""
    from ..extractor.extract import backbone_for_space

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

    from ..extractor.engine import ImageFiles, collate_skipping_failures, default_workers, resolve_device
    from ..extractor.preprocess import Normalize, ResizeCrop
    from ..finetune.model import load_finetuned

    module, pre = _memo(run, "finetuned", lambda: load_finetuned(run.path))
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
