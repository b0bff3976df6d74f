"""``tlx extract``: fill or update a dataset's feature cache, incrementally and crash-safely."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tlx.common.hashing import sha256_file
from tlx.common.progress import Reporter
from tlx.errors import CacheError, TlxError
from tlx.extractor import store
from tlx.extractor.config import FeatureSpace
from tlx.extractor.dataset import DatasetIndex, discover
from tlx.extractor.registry import DEFAULT_BACKBONE, get_backbone


class ExtractionFailed(TlxError):
    """``--strict`` and at least one image could not be read."""

    exit_code = 1


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
) -> ExtractResult:
    """Extract (or update) the features of ``data`` and return a summary of what was done."""
    from tlx import __version__

    started = time.perf_counter()
    reporter = reporter or Reporter()
    if pooling not in ("avg", "max", "avgmax"):
        raise TlxError(f"--pool must be avg, max or avgmax, not {pooling!r}")
    if batch_size < 1:
        raise TlxError(f"--batch-size must be at least 1, not {batch_size}")
    index = discover(data)  # bad data fails here, before anything is built or written
    ref = get_backbone(backbone)

    import torch

    from tlx.extractor.engine import FeatureRunner, resolve_device

    resolve_device(device)  # --device cuda without a GPU fails here, before anything is written
    net = ref.build(weights=weights)
    space = FeatureSpace.from_backbone(net.cfg, pooling)
    hashes, failed = hash_items(index)
    if failed and strict:
        first = next(iter(failed.items()))
        raise ExtractionFailed(f"{len(failed)} image(s) could not be read, first {first[0]}: {first[1]} (--strict)")

    cache_dir = Path(cache_dir) if cache_dir is not None else store.default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / store.cache_file_name(index.name, str(index.root), space)

    with store.CacheLock(path, on_wait=reporter.message):
        store.remove_stale_temporaries(path)  # from a run killed while it wrote the cache
        old = _read_previous(path, space, reporter)
        old_rows = old.row_of_hash() if old else {}
        journal = store.Journal(path, space)
        journaled = journal.load_index()

        todo = [i for i, h in enumerate(hashes) if h is not None and h not in old_rows and h not in journaled]
        todo_hashes = {hashes[i] for i in todo}

        runner = FeatureRunner(net, pooling, device=device, precision=precision)
        reporter.start(len(todo), f"extracting {index.name} with {space.backbone}")
        try:
            for batch in runner.run(
                [str(index.abspath(index.items[i])) for i in todo], batch_size, workers, on_batch=reporter.advance
            ):
                for j, reason in batch.failures:
                    failed[index.items[todo[j]].relpath] = reason
                if batch.failures and strict:
                    j, reason = batch.failures[0]
                    raise ExtractionFailed(f"{index.items[todo[j]].relpath}: {reason} (--strict)")
                if batch.indices:
                    journal.append([hashes[todo[j]] for j in batch.indices], batch.features)
        finally:
            reporter.stop()
        journaled = journal.load_index()

        class_of = {c: k for k, c in enumerate(index.classes)}
        rows = []
        for item, h in zip(index.items, hashes, strict=False):
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

        unchanged = (
            old is not None
            and all(r.old_row is not None for r in rows)  # nothing new (known failures retried in vain)
            and [r.path for r in rows] == old.paths
            and [r.sha256 for r in rows] == old.hashes
            and [r.label for r in rows] == old.labels.tolist()
            and [r.split for r in rows] == old.splits
            and index.classes == old.classes
            and failed == old.failed
        )
        n_removed = len(set(old.paths) - {r.path for r in rows}) if old else 0
        if not unchanged:
            created = old.attrs.get("created", store.now_iso()) if old else store.now_iso()
            attrs = {
                "dataset_name": index.name,
                "dataset_root": str(index.root),
                "dataset_layout": index.layout,
                "backbone": space.backbone,
                "weights_id": space.weights_id,
                "weights_sha256": space.weights_sha256,
                "weights_path": str(Path(weights).resolve()) if weights is not None else "",
                "preprocessing": json.dumps(space.preprocessing.to_dict()),
                "pooling": space.pooling,
                "license": net.cfg.license,
                "tlx_version": __version__,
                "torch_version": torch.__version__,
                "created": created,
                "updated": store.now_iso(),
            }
            store.write_cache(path, rows, index.classes, failed, space, attrs, old.path if old else None)
        journal.clear()

    seconds = time.perf_counter() - started
    n_reused = sum(1 for r in rows if r.old_row is not None)
    return ExtractResult(
        path=str(path),
        dataset=str(index.root),
        backbone=space.backbone,
        feature_dim=space.feature_dim,
        n_images=len(rows),
        n_new=sum(1 for r in rows if r.shard is not None and r.sha256 in todo_hashes),
        n_reused=n_reused,
        n_resumed=sum(1 for r in rows if r.shard is not None and r.sha256 not in todo_hashes),
        n_removed=n_removed,
        n_failed=len(failed),
        failed=[{"path": p, "reason": r} for p, r in failed.items()],
        seconds=round(seconds, 3),
        images_per_second=round(len(todo) / seconds, 2) if todo else 0.0,
        written=not unchanged,
    )


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
    except CacheError as exc:
        reporter.message(f"warning: {exc}; rebuilding it")
        return None
    if old.space.identity() != space.identity():
        # The file name encodes the feature space, so this is a foreign or edited file.
        raise CacheError(
            f"{path} holds features of another feature space ({space.difference(old.space)}); move it away and re-run"
        )
    return old
