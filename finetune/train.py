"""``finetune()``: resolve the config, split the data, build the network, run the epochs with a
checkpoint after each, and write the run folder. Epochs are 0-based in checkpoints (``resume``
starts at ``epoch + 1``) and 1-based in everything people read."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..common.progress import Reporter
from ..errors import DatasetError, RunError, TlxError
from . import checkpoint as ckpt
from .checkpoint import LoopState
from .config import (
    FinetuneConfig,
    InitHead,
    check_values,
    explicit_options,
    newest_cache,
    normalize_option,
    resolve_config,
    selection_record,
)
from .data import SplitData
from .distributed import Dist, all_gather_objects, barrier, broadcast_object, cleanup, setup
from .epoch import Precision, StepCallback, Training, evaluate, reduce_eval, reduce_train, train_one_epoch

if TYPE_CHECKING:
    from ..cache.space import FeatureSpace
    from ..extractor.networks import Backbone


@dataclass
class FinetuneResult:
    run: str
    val_accuracy: float
    best_epoch: int
    epochs_done: int
    seconds: float
    seconds_per_epoch: float
    early_stopped: bool
    resumed_from: int | None
    n_train: int
    n_val: int
    n_skipped: int
    selection: dict = field(default_factory=dict)  # how best_epoch was chosen; optimistic on val
    metrics: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "metrics"}


@dataclass
class Setup:
    """A run's fixed parts once built: the network and its training, the data, where it goes."""

    cfg: FinetuneConfig
    split: SplitData
    dataset_name: str
    cache_path: Path | None
    backbone: Backbone
    space: FeatureSpace
    n_unfreeze: int | None
    training: Training
    train_loader: DataLoader
    sampler: DistributedSampler
    val_loader: DataLoader
    val_paths: list[str]  # this process's shard
    val_labels: np.ndarray


def finetune(
    data=None,
    *,
    config: FinetuneConfig | None = None,
    workers: int | None = None,
    device: str | None = "auto",
    out=None,
    resume: bool = False,
    reporter: Reporter | None = None,
    on_step: StepCallback | None = None,
    **options,
) -> FinetuneResult:
    """Fine-tune the top of a backbone with a linear head; see ``tlx finetune --help``.

    ``options`` are the fields of :class:`FinetuneConfig`, or ``config`` gives them all (``options``
    override it); those left at ``None`` resolve to the checkpoint's (``resume``), the ``init_head``
    run's, then the defaults. ``on_step(epoch, step)`` is called after each training step."""
    from ..common.device import check_device
    from ..extractor.engine import default_workers, resolve_device

    given = {**(asdict(config) if config is not None else {}), **options}
    if data is not None or "data" not in given:
        given["data"] = data
    explicit = explicit_options(given)  # before any work: an unknown option is a TypeError
    started = time.perf_counter()
    check_device(device)
    where = resolve_device(device)
    procs = setup(where.type)
    if procs.enabled and where.type == "cuda":
        where = torch.device("cuda", procs.local_rank)
    reporter = reporter if (reporter is not None and procs.is_main) else Reporter()
    workers = default_workers() if workers is None else workers
    try:
        result = _run(procs, where, reporter, started, resume, out, workers, explicit, on_step)
    except BaseException:
        cleanup(procs, finished=False)
        raise
    cleanup(procs)
    return result


def _run(
    procs: Dist,
    device: torch.device,
    reporter: Reporter,
    started: float,
    resume: bool,
    out,
    workers: int,
    explicit: dict,
    on_step: StepCallback | None,
) -> FinetuneResult:
    cfg, init, cache_path, saved = _open(resume, out, explicit, reporter)
    check_values(cfg, procs.world)
    run = _build(cfg, init, saved, cache_path, out, procs, device, workers)
    resumed_from = None
    if saved is not None:
        run_dir = Path(out)
        state = ckpt.restore(saved, run.training, run_dir, procs.is_main)
        resumed_from = state.next_epoch
        reporter.message(f"resuming {run_dir} at epoch {state.next_epoch + 1}/{cfg.epochs}")
    else:
        state = LoopState()
        run_dir = _new_run_dir(procs, cfg, out)
    net = run.training.net
    unfrozen = "all" if run.n_unfreeze is None else run.n_unfreeze
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    reporter.message(
        f"fine-tuning {cfg.backbone} ({unfrozen} of {len(run.backbone.stages)} stages unfrozen, "
        f"{n_trainable:,} trainable parameters) on {len(run.split.train_paths)} train / {len(run.split.val_paths)} "
        f"val images of {run.dataset_name}, {procs.world} process(es) on {device}; run folder {run_dir}"
    )
    if init is not None:
        # LP-FT: the fitted head's own val score before any step ("epoch 0"). With --select-on val it is
        # also the first candidate, kept unless an epoch beats it on the val labels; by default it is
        # only reported. (A resumed run has it in its checkpoint.)
        local = evaluate(run.training, run.val_loader, run.val_labels)
        scores = state.init_eval = reduce_eval(procs, local, run.val_labels, device)
        if cfg.select_on == "val":
            state.improve(-1, scores["val_accuracy"], run.training.net, local)
            if procs.is_main:
                ckpt.save_best(run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST, state)
        reporter.message(
            f"epoch 0 (the fitted head, before any step): val loss {scores['val_loss']:.4f}, "
            f"val acc {scores['val_accuracy']:.4f}"
        )
    skipped = _run_epochs(run, state, run_dir, reporter, on_step)
    return _finish(run, state, run_dir, skipped, started, resumed_from)


def _open(
    resume: bool, out, explicit: dict, reporter: Reporter
) -> tuple[FinetuneConfig, InitHead | None, Path | None, dict | None]:
    """The config of a new run, or of the run in ``out`` with its last checkpoint (``resume``)."""
    last_path = Path(out or ".") / ckpt.CHECKPOINT_DIR / ckpt.LAST
    if not resume:
        if out is not None and last_path.is_file():
            raise RunError(
                f"--out {out} already holds a fine-tuning run: pass --resume to continue it, or choose another --out"
            )
        return (*resolve_config(explicit, reporter), None)
    if out is None:
        raise TlxError("--resume needs --out RUN, the folder of the fine-tuning run to continue")
    run_dir = Path(out)
    if not last_path.is_file():
        raise RunError(
            f"--resume: {run_dir} has no checkpoint ({ckpt.CHECKPOINT_DIR}/{ckpt.LAST}): it is not a fine-tuning "
            "run or it was killed before its first epoch ended; start it again without --resume"
        )
    saved = ckpt.load(last_path)
    config = saved["config"]
    diffs = [
        f"{key}: {config[key]!r} in the checkpoint, {value!r} now"
        for key, value in explicit.items()
        if key in config and normalize_option(key, config[key]) != value
    ]
    if diffs:
        raise TlxError(
            f"--resume: the options differ from the checkpoint in {run_dir} ({'; '.join(diffs)}): "
            "drop them to continue as it was, or start a new run with another --out"
        )
    # The checkpoint holds the head and the split: the --init-head run need not exist any more.
    return FinetuneConfig(**config), None, Path(saved["cache"]) if saved.get("cache") else None, saved


def _split(cfg: FinetuneConfig, init: InitHead | None, saved: dict | None, cache_path: Path | None, out):
    """The dataset, its split and the cache that lists its unreadable images. A resumed run validates
    on exactly its checkpoint's val images, an LP-FT run on exactly its head run's: so no image the
    network (or the head) was trained on can score."""
    from ..extractor.discovery import discover
    from .data import cache_failures, split_by_members, split_dataset

    index = discover(cfg.data)
    cache_path = cache_path or newest_cache(index.root)
    exclude = cache_failures(index.root, cache_path)
    earlier = (saved or {}).get("split") or {}
    if "val_sha256" in earlier:
        whose, fix = f"the checkpoint in {out}", "restore them, or start a new run without --resume"
        split = split_by_members(index, earlier, whose, fix, exclude, cache_path)
    elif init is not None:
        if list(init.run.classes) != list(index.classes):
            raise TlxError(
                f"--init-head {cfg.init_head} was fitted on the classes {init.run.classes} but {cfg.data} has "
                f"{index.classes}: fit a head on this dataset first"
            )
        whose = f"the head run {cfg.init_head}"
        fix = "restore them, or fit a new head on the current data (`tlx extract`, then `tlx fit-head`)"
        split = split_by_members(index, {**init.split, "init_head": cfg.init_head}, whose, fix, exclude, init.cache)
    else:
        split = split_dataset(index, cfg.val_fraction, cfg.seed, exclude)
    if not len(split.train_paths) or not len(split.val_paths):
        raise DatasetError(
            f"{cfg.data}: the split leaves {len(split.train_paths)} training and {len(split.val_paths)} "
            "validation images; both need at least one"
        )
    return index, split, cache_path


def _build(
    cfg: FinetuneConfig,
    init: InitHead | None,
    saved: dict | None,
    cache_path: Path | None,
    out,
    procs: Dist,
    device: torch.device,
    workers: int,
) -> Setup:
    """Split the data, then build the network, its optimizer and the loaders."""
    from ..cache.space import FeatureSpace
    from ..extractor.preprocess import Normalize
    from .data import eval_loader, train_loader
    from .optim import make_optimizer, make_scheduler

    index, split, cache_path = _split(cfg, init, saved, cache_path, out)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    backbone, net, n_unfreeze, trainable = _network(cfg, init, len(split.classes))
    pre, cuda = backbone.cfg.preprocessing, device.type == "cuda"
    model, amp_dtype, scaler = _on_device(net, device, procs)
    per_process = cfg.batch_size // procs.world
    loader, sampler = train_loader(
        split.train_paths, pre, per_process, workers, cfg.augment, cfg.seed, procs.rank, procs.world, cuda
    )
    optimizer = make_optimizer(net, cfg)
    warmup = round(min(cfg.warmup_epochs, cfg.epochs / 5) * len(loader))
    scheduler = make_scheduler(optimizer, cfg.epochs * len(loader), warmup)
    normalize, precision = Normalize(pre).to(device), Precision(device, amp_dtype)
    training = Training(
        net, model, optimizer, scheduler, scaler, normalize, precision, trainable, cfg.train_bn, pre.input_size, procs
    )
    space = FeatureSpace.from_backbone(backbone.cfg, cfg.pool)
    val_paths = split.val_paths[procs.rank :: procs.world]
    val_loader = eval_loader(val_paths, pre, per_process, workers, cuda)
    val_labels = split.val_labels[procs.rank :: procs.world]
    shards = (loader, sampler, val_loader, val_paths, val_labels)
    return Setup(cfg, split, index.name, cache_path, backbone, space, n_unfreeze, training, *shards)


def _network(cfg: FinetuneConfig, init: InitHead | None, n_classes: int):
    """``(backbone, net, n_unfreeze, trainable)``, with the head run's backbone and folded head for ``init``."""
    from ..extractor.extract import backbone_for_space
    from ..extractor.registry import get_backbone
    from .model import apply_freezing, build_net, fold_linear_head, parse_unfreeze

    if init is not None:
        backbone = backbone_for_space(init.run.space, cfg.weights or None)
    else:
        backbone = get_backbone(cfg.backbone).build(weights=cfg.weights or None)
    n_unfreeze = parse_unfreeze(cfg.unfreeze, len(backbone.stages), cfg.backbone)
    torch.manual_seed(cfg.seed)  # the head's init depends on the seed only
    net = build_net(backbone, cfg.pool, n_classes)
    trainable = apply_freezing(net, backbone.stages, n_unfreeze)
    if init is not None:
        fold_linear_head(net.head, *init.linear)
    return backbone, net, n_unfreeze, trainable


def _on_device(net: nn.Module, device: torch.device, procs: Dist):
    """``(model, amp dtype, grad scaler)`` of ``net`` moved to ``device``: DDP-wrapped under torchrun,
    and on a GPU mixed precision (bf16 where supported, else fp16 with a scaler)."""
    cuda = device.type == "cuda"
    net.to(device)
    if cuda:
        net.to(memory_format=torch.channels_last)
    model: nn.Module = net
    if procs.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[procs.local_rank] if cuda else None)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return model, amp_dtype, scaler


def _new_run_dir(procs: Dist, cfg: FinetuneConfig, out) -> Path:
    """Made by the main process; every process learns its name."""
    run_dir = None
    if procs.is_main:
        from ..common.runfolder import new_run_dir

        tag = "finetune-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in cfg.backbone)
        run_dir = new_run_dir(tag, Path(out) if out is not None else None)
    return Path(broadcast_object(procs, str(run_dir) if run_dir is not None else None))


def _run_epochs(
    run: Setup, state: LoopState, run_dir: Path, reporter: Reporter, on_step: StepCallback | None
) -> set[str]:
    """Train and evaluate each remaining epoch, checkpointing after each; returns the images skipped."""
    cfg, training, procs = run.cfg, run.training, run.training.procs
    last_path, best_path = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST, run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST
    cache = str(run.cache_path) if run.cache_path else ""
    extra = {"config": asdict(cfg), "cache": cache, "feature_space": run.space.to_dict(), "split": run.split.info}
    skipped: set[str] = set()
    for epoch in range(state.next_epoch, cfg.epochs):
        if state.stopped:
            break
        started = time.perf_counter()
        trained, local, train_seconds = _train_and_evaluate(run, epoch, reporter, on_step)
        train_loss, n_train = reduce_train(procs, trained, training.precision.device)
        scores = reduce_eval(procs, local, run.val_labels, training.precision.device)
        skipped.update(run.split.train_paths[j] for j, _ in trained["failures"])
        skipped.update(run.val_paths[j] for j, _ in local["failures"])
        seconds = time.perf_counter() - started
        entry = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **scores,  # val_loss, val_accuracy
            "lr": float(training.optimizer.param_groups[-1]["lr"]),
            "seconds": round(seconds, 3),
            "train_images_per_second": round(n_train / max(train_seconds, 1e-9), 2),
        }
        state.history.append(entry)
        improved = scores["val_accuracy"] > state.best_accuracy
        kept = improved or cfg.select_on == "last"  # "last": every epoch replaces the kept weights
        if kept:
            state.improve(epoch, scores["val_accuracy"], training.net, local)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.stopped = bool(cfg.early_stop) and state.bad_epochs >= cfg.early_stop and epoch + 1 < cfg.epochs
        if procs.is_main:
            ckpt.save_last(last_path, training, epoch, state, extra)
            if kept:
                ckpt.save_best(best_path, state)
        best = " (best)" if improved and cfg.select_on == "val" else ""
        reporter.message(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}, val loss {entry['val_loss']:.4f}, "
            f"val acc {entry['val_accuracy']:.4f}{best}, {seconds:.1f} s, "
            f"{entry['train_images_per_second']:.1f} img/s"
            + (f"; no improvement for {state.bad_epochs} epochs, stopping early" if state.stopped else "")
        )
    barrier(procs)
    return skipped


def _train_and_evaluate(run: Setup, epoch: int, reporter: Reporter, on_step: StepCallback | None):
    """One epoch of training, then this process's share of the val images: ``(trained, evaluated,
    training seconds)``, not yet reduced over the processes."""
    cfg, training = run.cfg, run.training
    started = time.perf_counter()
    run.sampler.set_epoch(epoch)
    run.train_loader.generator.manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + training.procs.rank)
    reporter.start(len(run.sampler), f"epoch {epoch + 1}/{cfg.epochs} train")
    try:
        trained = train_one_epoch(training, run.train_loader, run.split.train_labels, epoch, reporter, on_step)
    finally:
        reporter.stop()
    train_seconds = time.perf_counter() - started
    reporter.start(len(run.val_paths), f"epoch {epoch + 1}/{cfg.epochs} val")
    try:
        local = evaluate(training, run.val_loader, run.val_labels, reporter)
    finally:
        reporter.stop()
    return trained, local, train_seconds


def _finish(
    run: Setup, state: LoopState, run_dir: Path, skipped: set[str], started: float, resumed_from: int | None
) -> FinetuneResult:
    """Evaluate the best weights once more with every probability, and write the run folder."""
    from .report import write_run

    training, procs = run.training, run.training.procs
    if state.best_weights is None:
        raise RunError(f"{run_dir}: no epoch finished, nothing to report")
    training.net.load_state_dict(state.best_weights)
    local = state.best_eval or evaluate(training, run.val_loader, run.val_labels)
    history = state.history
    summary: dict[str, Any] = {  # what metrics.json and the result share
        "best_epoch": state.best_epoch + 1,
        "epochs_done": len(history),
        "early_stopped": bool(state.stopped),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])) if history else 0.0, 3),
        "n_train": len(run.split.train_paths),
        "n_val": len(run.split.val_paths),
        "selection": selection_record(run.cfg),
    }
    # Shard k of each process is row k * world + rank of the whole val set: put them back in order.
    parts = all_gather_objects(procs, (local["indices"] * procs.world + procs.rank, local["proba"]))
    metrics = {}
    if procs.is_main:
        order = np.concatenate([p[0] for p in parts])
        proba = np.concatenate([p[1] for p in parts])
        keep = np.argsort(order, kind="stable")
        metrics = write_run(run, state, run_dir, order[keep], proba[keep], summary)
    barrier(procs)
    return FinetuneResult(
        run=str(run_dir),
        val_accuracy=float(metrics.get("val_accuracy", state.best_accuracy)),
        seconds=round(time.perf_counter() - started, 3),
        resumed_from=resumed_from,
        n_skipped=len(skipped),
        metrics=metrics,
        **summary,
    )
