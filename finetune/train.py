"""Fine-tuning as plain functions, in the manner of torchvision's classification reference:
``train_one_epoch`` and ``evaluate`` take what they need; ``finetune`` resolves the config,
builds everything, runs the epochs with a checkpoint after each, and writes the run folder.

Epoch numbers are 0-based inside checkpoints (``resume`` starts at ``epoch + 1``) and
1-based in everything people read (history, ``best_epoch``, messages).
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlx.common.progress import Reporter
from tlx.errors import DatasetError, RunError, TlxError
from tlx.finetune import checkpoint as ckpt
from tlx.finetune.distributed import Dist, all_gather_objects, all_reduce_sum, barrier, broadcast_object, cleanup, setup
from tlx.finetune.model import FineTuneNet, apply_freezing, build_net, fold_linear_head, parse_unfreeze, set_train_mode

OPTIMIZERS = ("adamw", "sgd")
# Seconds to sleep after each training step: lets tests kill a run in the middle of an epoch.
STEP_DELAY_ENV = "TLX_FINETUNE_STEP_DELAY"


# --------------------------------------------------------------------------- configuration


@dataclass
class FinetuneConfig:
    """Everything that decides what a run computes; a resumed run must have the same."""

    data: str
    backbone: str
    weights: str = ""
    pool: str = "avg"
    unfreeze: str = "1"  # a number of stages, or "all"
    epochs: int = 10
    lr: float = 1e-4  # body
    head_lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    batch_size: int = 32  # in total, over all processes
    init_head: str = ""
    augment: bool = True
    train_bn: bool = False
    early_stop: int = 0  # patience in epochs, 0 = off
    val_fraction: float = 0.2
    seed: int = 0
    warmup_epochs: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_LR = {"adamw": 1e-4, "sgd": 1e-3}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 1e-4}


def _normalize_option(key: str, value):
    if value is None:
        return None
    if key in ("data", "weights", "init_head"):
        return str(Path(value).expanduser().resolve()) if str(value) else ""
    if key == "unfreeze":
        return str(value).strip().lower()
    if key in ("lr", "head_lr", "weight_decay", "val_fraction", "warmup_epochs"):
        return float(value)
    if key in ("epochs", "batch_size", "early_stop", "seed"):
        return int(value)
    if key in ("augment", "train_bn"):
        return bool(value)
    return str(value)


def config_difference(saved: dict, explicit: dict) -> list[str]:
    """'key: saved -> asked' for every explicitly given option that differs from the checkpoint's."""
    diffs = []
    for key, value in explicit.items():
        if key in saved and _normalize_option(key, saved[key]) != value:
            diffs.append(f"{key}: {saved[key]!r} in the checkpoint, {value!r} now")
    return diffs


# --------------------------------------------------------------------------- optimization


def make_optimizer(net: FineTuneNet, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """Head and body in separate groups (own learning rates); no weight decay on biases and norms."""
    groups = []
    for part, lr in ((net.head, cfg.head_lr), (net.body, cfg.lr)):
        params = [p for p in part.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per step: linear warm-up from ~0 to the base rates, then cosine decay to 0."""
    total_steps, warmup_steps = max(1, total_steps), max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- the loops


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype on CUDA, None = fp32

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()


def _to_device(images: torch.Tensor, normalize: nn.Module, device: torch.device) -> torch.Tensor:
    x = normalize(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_one_epoch(
    model: nn.Module,
    net: FineTuneNet,
    loader,
    labels: np.ndarray,
    optimizer,
    scheduler,
    scaler,
    normalize: nn.Module,
    precision: Precision,
    trainable: set[str],
    train_bn: bool,
    reporter: Reporter | None = None,
) -> dict:
    """One pass over this process's shard of the training set; returns local sums."""
    set_train_mode(net, trainable, train_bn)
    device = precision.device
    delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)
    loss_sum, n, failures = 0.0, 0, []
    for indices, images, failed in loader:
        failures += failed
        if indices:
            y = torch.as_tensor(labels[indices], device=device)
            x = _to_device(images, normalize, device)
            with precision.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        else:  # every image of the batch was unreadable: a zero step keeps the processes in step
            loss = sum(p.sum() for p in net.parameters() if p.requires_grad) * 0.0
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(indices)
        n += len(indices)
        if reporter is not None:
            reporter.advance(len(indices) + len(failed))
        if delay:
            time.sleep(delay)
    return {"loss_sum": loss_sum, "n": n, "failures": failures}


@torch.no_grad()
def evaluate(
    net: FineTuneNet,
    loader,
    labels: np.ndarray,
    normalize: nn.Module,
    precision: Precision,
    reporter: Reporter | None = None,
) -> dict:
    """Probabilities for this process's shard of the validation set (no padding, no duplicates)."""
    net.eval()
    device = precision.device
    idx, probs, failures, loss_sum = [], [], [], 0.0
    for indices, images, failed in loader:
        failures += failed
        if indices:
            y = torch.as_tensor(labels[indices], device=device)
            with precision.autocast():
                logits = net(_to_device(images, normalize, device))
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            idx += list(indices)
        if reporter is not None:
            reporter.advance(len(indices) + len(failed))
    proba = np.concatenate(probs) if probs else np.zeros((0, net.head.out_features), np.float32)
    return {"indices": np.asarray(idx, dtype=np.int64), "proba": proba, "loss_sum": loss_sum, "failures": failures}


def reduce_eval(d: Dist, local: dict, labels: np.ndarray, num_classes: int, device: torch.device) -> dict:
    """Sum loss, hits and the confusion matrix over processes (all_reduce): exact, each image once."""
    y = labels[local["indices"]]
    pred = local["proba"].argmax(axis=1) if len(y) else np.zeros(0, np.int64)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y, pred), 1)
    comm_device = device if d.enabled and device.type == "cuda" else torch.device("cpu")
    sums = all_reduce_sum(
        d, torch.tensor([local["loss_sum"], float(len(y))], dtype=torch.float64, device=comm_device)
    ).cpu()
    cm = all_reduce_sum(d, torch.from_numpy(cm).to(comm_device)).cpu().numpy()
    n = int(sums[1])
    return {
        "val_loss": float(sums[0]) / max(1, n),
        "val_accuracy": float(np.trace(cm)) / max(1, n),
        "n": n,
        "confusion_matrix": cm,
    }


# --------------------------------------------------------------------------- the run


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
    metrics: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("metrics")
        return d


def _dataset_from_cache(cache_path: Path) -> Path:
    from tlx.extractor.store import read_attrs

    attrs = read_attrs(cache_path)
    root = Path(str(attrs.get("dataset_root", "")))
    if attrs.get("dataset_layout") == "csv":
        return root / f"{attrs.get('dataset_name', '')}.csv"
    return root


def _find_cache_of(dataset_root: Path) -> Path | None:
    """The newest cache in the default cache folder made from ``dataset_root``."""
    from tlx.extractor.store import default_cache_dir, list_caches, read_attrs

    where = default_cache_dir()
    if not where.is_dir():
        return None
    for path in list_caches(where):
        try:
            if str(read_attrs(path).get("dataset_root", "")) == str(dataset_root):
                return path
        except Exception:
            continue
    return None


def _load_init_head(run_dir: str):
    """The fitted linear head of a `tlx fit-head` run: (run, W, b, shift, scale)."""
    from tlx.heads.runs import load_run

    run = load_run(run_dir)
    if run.kind != "head":
        raise RunError(
            f"--init-head {run_dir} is a {run.kind} run: it needs a run made by `tlx fit-head` (a linear head on cached features)"
        )
    W, b, shift, scale = run.head.linear_form()  # NotExportableError (exit 2) for non-linear heads
    classes_ = getattr(run.head, "classes_", None)
    if classes_ is not None and list(np.asarray(classes_).tolist()) != list(range(len(run.classes))):
        raise RunError(
            f"--init-head {run_dir}: the head was fitted on {len(classes_)} of the run's {len(run.classes)} classes; fine-tuning needs a head that knows every class"
        )
    return run, W, b, shift, scale


def finetune(
    data=None,
    *,
    backbone: str | None = None,
    weights=None,
    pool: str | None = None,
    unfreeze: str | int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    head_lr: float | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    init_head=None,
    augment: bool | None = None,
    train_bn: bool | None = None,
    early_stop: int | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    warmup_epochs: float | None = None,
    workers: int | None = None,
    device: str | None = "auto",
    out=None,
    resume: bool = False,
    reporter: Reporter | None = None,
) -> FinetuneResult:
    """Fine-tune the top of a backbone with a linear head; see ``tlx finetune --help``.

    Options left at ``None`` resolve to: the checkpoint's value (``resume``), the
    ``init_head`` run's (backbone, pooling, split), then the defaults of :class:`FinetuneConfig`."""
    from tlx.extractor.engine import default_workers, resolve_device

    started = time.perf_counter()
    dev = resolve_device(device)
    d = setup(dev.type)
    if d.enabled and dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
    reporter = reporter if (reporter is not None and d.is_main) else Reporter()
    try:
        return _finetune(
            d,
            dev,
            reporter,
            started,
            resume,
            out,
            default_workers() if workers is None else workers,
            {
                "data": data,
                "backbone": backbone,
                "weights": weights,
                "pool": pool,
                "unfreeze": unfreeze,
                "epochs": epochs,
                "lr": lr,
                "head_lr": head_lr,
                "optimizer": optimizer,
                "weight_decay": weight_decay,
                "batch_size": batch_size,
                "init_head": init_head,
                "augment": augment,
                "train_bn": train_bn,
                "early_stop": early_stop,
                "val_fraction": val_fraction,
                "seed": seed,
                "warmup_epochs": warmup_epochs,
            },
        )
    finally:
        cleanup(d)


def _resolve_config(explicit: dict, reporter: Reporter) -> tuple[FinetuneConfig, tuple | None, Path | None]:
    """Fill the options not given: init-head run, most recent cache, defaults."""
    from tlx.extractor.features import resolve_cache
    from tlx.extractor.registry import DEFAULT_BACKBONE

    values = dict(explicit)
    init = None
    if values.get("init_head"):
        init = _load_init_head(values["init_head"])
        run = init[0]
        if values.get("backbone") not in (None, run.space.backbone):
            raise TlxError(
                f"--backbone {values['backbone']} but the head in {values['init_head']} was fitted on {run.space.backbone} features: drop --backbone, or fit a head on {values['backbone']} features"
            )
        if values.get("pool") not in (None, run.space.pooling):
            raise TlxError(
                f"--pool {values['pool']} but the head in {values['init_head']} was fitted on {run.space.pooling}-pooled features: drop --pool, or fit a head on {values['pool']}-pooled features"
            )
        values["backbone"], values["pool"] = run.space.backbone, run.space.pooling
        split = run.info.get("split") or {}
        if isinstance(split, dict) and split.get("source") == "seeded":  # the same split as the head's
            if values.get("val_fraction") is None:
                values["val_fraction"] = split.get("val_fraction")
            if values.get("seed") is None:
                values["seed"] = split.get("seed")
        if values.get("weights") is None and run.space.weights_id.startswith("file:"):
            from tlx.heads.runs import weights_path_for

            values["weights"] = weights_path_for(run)  # the file the head's features were made with
    cache_path = None
    if values.get("data") is None:
        if init is not None and init[0].info.get("cache") and Path(init[0].info["cache"]).is_file():
            cache_path = Path(init[0].info["cache"])
            source = f"the cache of {values['init_head']}"
        else:
            cache_path = resolve_cache(None)
            source = "the most recent cache"
        values["data"] = str(_dataset_from_cache(cache_path))
        reporter.message(f"no DATA given: using {values['data']}, the dataset of {source} ({cache_path})")
    elif init is not None and init[0].info.get("cache") and Path(init[0].info["cache"]).is_file():
        cache_path = Path(init[0].info["cache"])
    values = {k: _normalize_option(k, v) for k, v in values.items()}
    opt = values.get("optimizer") or "adamw"
    if opt not in OPTIMIZERS:
        raise TlxError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {opt!r}")
    values["optimizer"] = opt
    if values.get("lr") is None:
        values["lr"] = DEFAULT_LR[opt]
    if values.get("head_lr") is None:
        # A fitted head is already good: move it as gently as the body. A random one needs 10x.
        values["head_lr"] = values["lr"] if values.get("init_head") else 10.0 * values["lr"]
    if values.get("weight_decay") is None:
        values["weight_decay"] = DEFAULT_WEIGHT_DECAY[opt]
    values["backbone"] = values.get("backbone") or DEFAULT_BACKBONE
    cfg = FinetuneConfig(**{k: v for k, v in values.items() if v is not None})
    return cfg, init, cache_path


def _check_values(cfg: FinetuneConfig, world: int) -> None:
    if cfg.epochs < 1:
        raise TlxError(f"--epochs must be at least 1, not {cfg.epochs}")
    if cfg.batch_size < 1 or cfg.batch_size % world:
        raise TlxError(
            f"--batch-size {cfg.batch_size} must be a positive multiple of the number of processes ({world}): it is the total over all of them"
        )
    if cfg.pool not in ("avg", "max", "avgmax"):
        raise TlxError(f"--pool must be avg, max or avgmax, not {cfg.pool!r}")
    for name in ("lr", "head_lr"):
        if not getattr(cfg, name) > 0:
            raise TlxError(f"--{name.replace('_', '-')} must be positive, not {getattr(cfg, name)}")
    if cfg.early_stop < 0:
        raise TlxError(f"--early-stop must be 0 (off) or a number of epochs, not {cfg.early_stop}")


def _finetune(
    d: Dist, dev: torch.device, reporter: Reporter, started: float, resume: bool, out, workers: int, options: dict
) -> FinetuneResult:
    from tlx import __version__
    from tlx.extractor.config import FeatureSpace
    from tlx.extractor.dataset import discover
    from tlx.extractor.extract import backbone_for_space
    from tlx.extractor.preprocess import Normalize
    from tlx.extractor.registry import get_backbone
    from tlx.finetune.data import cache_failures, eval_loader, split_dataset, train_loader

    # -- resume or new --------------------------------------------------------------------------
    explicit = {k: _normalize_option(k, v) for k, v in options.items() if v is not None}
    state = None
    run_dir = Path(out) if out is not None else None
    last_path = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST if run_dir is not None else None
    if resume:
        if run_dir is None:
            raise TlxError("--resume needs --out RUN, the folder of the fine-tuning run to continue")
        if not last_path.is_file():
            raise RunError(
                f"--resume: {run_dir} has no checkpoint ({ckpt.CHECKPOINT_DIR}/{ckpt.LAST}): it is not a fine-tuning run or it was killed before its first epoch ended; start it again without --resume"
            )
        state = ckpt.load(last_path)
        diffs = config_difference(state["config"], explicit)
        if diffs:
            raise TlxError(
                f"--resume: the options differ from the checkpoint in {run_dir} ({'; '.join(diffs)}): drop them to continue as it was, or start a new run with another --out"
            )
        cfg = FinetuneConfig(**state["config"])
        init = None  # the checkpoint holds the head; the --init-head run need not exist any more
        cache_path = Path(state["cache"]) if state.get("cache") else None
    else:
        if last_path is not None and last_path.is_file():
            raise RunError(
                f"--out {run_dir} already holds a fine-tuning run: pass --resume to continue it, or choose another --out"
            )
        cfg, init, cache_path = _resolve_config(explicit, reporter)
    _check_values(cfg, d.world)

    # -- data -------------------------------------------------------------------------------------
    index = discover(cfg.data)
    if cache_path is None:
        cache_path = _find_cache_of(index.root)
    split = split_dataset(index, cfg.val_fraction, cfg.seed, exclude=cache_failures(index.root, cache_path))
    if init is not None and list(init[0].classes) != list(split.classes):
        raise TlxError(
            f"--init-head {cfg.init_head} was fitted on the classes {init[0].classes} but {cfg.data} has {split.classes}: fit a head on this dataset first"
        )
    if not len(split.train_paths) or not len(split.val_paths):
        raise DatasetError(
            f"{cfg.data}: the split leaves {len(split.train_paths)} training and {len(split.val_paths)} validation images; both need at least one"
        )

    # -- model ------------------------------------------------------------------------------------
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if init is not None:
        backbone = backbone_for_space(init[0].space, cfg.weights or None)
    else:
        backbone = get_backbone(cfg.backbone).build(weights=cfg.weights or None)
    space = FeatureSpace.from_backbone(backbone.cfg, cfg.pool)
    n_unfreeze = parse_unfreeze(cfg.unfreeze, len(backbone.stages), cfg.backbone)
    torch.manual_seed(cfg.seed)  # the head's init depends on the seed only
    net = build_net(backbone, cfg.pool, len(split.classes))
    trainable = apply_freezing(net, backbone.stages, n_unfreeze)
    if init is not None:
        fold_linear_head(net.head, *init[1:])
    pre = backbone.cfg.preprocessing
    cuda = dev.type == "cuda"
    net.to(dev, memory_format=torch.channels_last) if cuda else net.to(dev)
    normalize = Normalize(pre).to(dev)
    model: nn.Module = net
    if d.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[d.local_rank] if cuda else None)

    amp_dtype = None
    if cuda:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    precision = Precision(dev, amp_dtype)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    per_process = cfg.batch_size // d.world
    loader, sampler = train_loader(
        split.train_paths, pre, per_process, workers, cfg.augment, cfg.seed, d.rank, d.world, cuda
    )
    val_shard = split.val_paths[d.rank :: d.world]
    val_loader = eval_loader(val_shard, pre, per_process, workers, cuda)
    val_labels_shard = split.val_labels[d.rank :: d.world]
    steps_per_epoch = len(loader)
    warmup = round(min(cfg.warmup_epochs, cfg.epochs / 5) * steps_per_epoch)
    optimizer = make_optimizer(net, cfg)
    scheduler = make_scheduler(optimizer, cfg.epochs * steps_per_epoch, warmup)

    # -- state --------------------------------------------------------------------------------------
    history: list[dict] = []
    best = {"epoch": -1, "val_accuracy": -1.0}
    bad_epochs, start_epoch, stopped, resumed_from = 0, 0, False, None
    best_state, best_eval = None, None
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history, best = list(state["history"]), dict(state["best"])
        bad_epochs, stopped = int(state["bad_epochs"]), bool(state["stopped"])
        start_epoch = resumed_from = int(state["epoch"]) + 1
        ckpt.set_rng_state(state["rng"])
        best_path = run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST
        saved_best = ckpt.load(best_path) if best_path.is_file() else None
        if saved_best is not None and int(saved_best["epoch"]) == best["epoch"]:
            best_state = saved_best["model"]
        elif best["epoch"] == int(state["epoch"]):  # killed between writing last.pt and best.pt
            best_state = {k: v.clone() for k, v in state["model"].items()}
            if d.is_main:
                ckpt.save_atomic(
                    {"model": best_state, "epoch": best["epoch"], "val_accuracy": best["val_accuracy"]}, best_path
                )
        else:
            raise RunError(
                f"{best_path} does not hold the best epoch ({best['epoch'] + 1}) that {last_path} records: the run folder is damaged; start a new run"
            )
        reporter.message(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.epochs}")
    else:
        run_dir = None
        if d.is_main:
            from tlx.common.runfolder import new_run_dir

            tag = "finetune-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in cfg.backbone)
            run_dir = new_run_dir(tag, Path(out) if out is not None else None)
        run_dir = Path(broadcast_object(d, str(run_dir) if run_dir is not None else None))
    last_path = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST
    best_path = run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST
    reporter.message(
        f"fine-tuning {cfg.backbone} ({'all' if n_unfreeze is None else n_unfreeze} of {len(backbone.stages)} stages unfrozen, "
        f"{sum(p.numel() for p in net.parameters() if p.requires_grad):,} trainable parameters) on {len(split.train_paths)} train / "
        f"{len(split.val_paths)} val images of {index.name}, {d.world} process(es) on {dev}; run folder {run_dir}"
    )

    # -- LP-FT: the fitted head itself is the first candidate ("epoch 0") -------------------------
    # Fine-tuned weights replace the linear probe only where they beat it on the validation
    # split, so starting from a fitted head never ends below that head.
    if state is not None:
        init_eval = state.get("init_eval") or None
    elif init is not None:
        ev0 = evaluate(net, val_loader, val_labels_shard, normalize, precision)
        red0 = reduce_eval(d, ev0, val_labels_shard, len(split.classes), dev)
        init_eval = {"val_accuracy": red0["val_accuracy"], "val_loss": red0["val_loss"]}
        best = {"epoch": -1, "val_accuracy": red0["val_accuracy"]}
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        best_eval = ev0
        if d.is_main:
            ckpt.save_atomic({"model": best_state, "epoch": -1, "val_accuracy": red0["val_accuracy"]}, best_path)
        reporter.message(
            f"epoch 0 (the fitted head, before any step): val loss {red0['val_loss']:.4f}, val acc {red0['val_accuracy']:.4f}"
        )
    else:
        init_eval = None

    # -- epochs -------------------------------------------------------------------------------------
    skipped: dict[str, str] = {}
    epoch_seconds = []
    loader_gen = loader.generator
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        loader_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + d.rank)
        reporter.start(len(sampler), f"epoch {epoch + 1}/{cfg.epochs} train")
        try:
            tr = train_one_epoch(
                model,
                net,
                loader,
                split.train_labels,
                optimizer,
                scheduler,
                scaler,
                normalize,
                precision,
                trainable,
                cfg.train_bn,
                reporter,
            )
        finally:
            reporter.stop()
        t_train = time.perf_counter() - t0
        reporter.start(len(val_shard), f"epoch {epoch + 1}/{cfg.epochs} val")
        try:
            ev = evaluate(net, val_loader, val_labels_shard, normalize, precision, reporter)
        finally:
            reporter.stop()
        train_sums = all_reduce_sum(
            d,
            torch.tensor(
                [tr["loss_sum"], float(tr["n"])], dtype=torch.float64, device=dev if d.enabled and cuda else "cpu"
            ),
        ).cpu()
        red = reduce_eval(d, ev, val_labels_shard, len(split.classes), dev)
        for j, reason in tr["failures"]:
            skipped[split.train_paths[j]] = reason
        for j, reason in ev["failures"]:
            skipped[val_shard[j]] = reason
        seconds = time.perf_counter() - t0
        epoch_seconds.append(seconds)
        n_train = int(train_sums[1])
        entry = {
            "epoch": epoch + 1,
            "train_loss": float(train_sums[0]) / max(1, n_train),
            "val_loss": red["val_loss"],
            "val_accuracy": red["val_accuracy"],
            "lr": float(optimizer.param_groups[-1]["lr"]),
            "seconds": round(seconds, 3),
            "train_images_per_second": round(n_train / max(t_train, 1e-9), 2),
        }
        history.append(entry)
        improved = red["val_accuracy"] > best["val_accuracy"]
        if improved:
            best = {"epoch": epoch, "val_accuracy": red["val_accuracy"]}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            best_eval = ev
            bad_epochs = 0
        else:
            bad_epochs += 1
        stopped = bool(cfg.early_stop) and bad_epochs >= cfg.early_stop and epoch + 1 < cfg.epochs
        if d.is_main:
            ckpt.save_atomic(
                {
                    "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "epoch": epoch,
                    "config": cfg.to_dict(),
                    "rng": ckpt.rng_state(),
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                    "cache": str(cache_path) if cache_path else "",
                    "feature_space": space.to_dict(),
                    "init_eval": init_eval or {},
                },
                last_path,
            )
            if improved:
                ckpt.save_atomic({"model": best_state, "epoch": epoch, "val_accuracy": red["val_accuracy"]}, best_path)
        reporter.message(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {entry['train_loss']:.4f}, val loss {entry['val_loss']:.4f}, "
            f"val acc {entry['val_accuracy']:.4f}{' (best)' if improved else ''}, {seconds:.1f} s, "
            f"{entry['train_images_per_second']:.1f} img/s"
            + (f"; no improvement for {bad_epochs} epochs, stopping early" if stopped else "")
        )
    barrier(d)

    # -- the best model, evaluated once more with every probability --------------------------------
    if best_state is None:
        raise RunError(f"{run_dir}: no epoch finished, nothing to report")
    net.load_state_dict(best_state)
    ev = best_eval if best_eval is not None else evaluate(net, val_loader, val_labels_shard, normalize, precision)
    parts = all_gather_objects(d, (ev["indices"] * d.world + d.rank, ev["proba"]))
    seconds = time.perf_counter() - started
    metrics = {}
    if d.is_main:
        order = np.concatenate([p[0] for p in parts])
        proba = np.concatenate([p[1] for p in parts])
        keep = np.argsort(order, kind="stable")
        order, proba = order[keep], proba[keep]
        metrics = _write_run(
            run_dir,
            cfg,
            split,
            order,
            proba,
            space,
            backbone,
            n_unfreeze,
            history,
            best,
            best_state,
            stopped,
            cache_path,
            epoch_seconds,
            seconds,
            __version__,
            init_eval,
        )
    barrier(d)
    seconds_per_epoch = float(np.mean([h["seconds"] for h in history])) if history else 0.0
    return FinetuneResult(
        run=str(run_dir),
        val_accuracy=float(metrics.get("val_accuracy", best["val_accuracy"])),
        best_epoch=best["epoch"] + 1,
        epochs_done=len(history),
        seconds=round(seconds, 3),
        seconds_per_epoch=round(seconds_per_epoch, 3),
        early_stopped=stopped,
        resumed_from=resumed_from,
        n_train=len(split.train_paths),
        n_val=len(split.val_paths),
        n_skipped=len(skipped),
        metrics=metrics,
    )


def _write_run(
    run_dir: Path,
    cfg: FinetuneConfig,
    split,
    order,
    proba,
    space,
    backbone,
    n_unfreeze,
    history,
    best,
    best_state,
    stopped,
    cache_path,
    epoch_seconds,
    seconds,
    version,
    init_eval=None,
) -> dict:
    from tlx.common.runfolder import compute_metrics, plot_confusion, write_metrics
    from tlx.extractor.store import now_iso
    from tlx.finetune.report import plot_learning_curve, save_model, write_finetune_config

    y_true = split.val_labels[order]
    m = compute_metrics(y_true, proba, split.classes)
    seconds_per_epoch = float(np.mean([h["seconds"] for h in history])) if history else 0.0
    metrics = {
        "kind": "finetune",
        "clf": "finetune",
        "params": cfg.to_dict(),
        "val_accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_f1": m["macro_f1"],
        "per_class": m["per_class"],
        "confusion_matrix": m["confusion_matrix"],
        "log_loss": m["log_loss"],
        "fit_seconds": round(float(sum(h["seconds"] for h in history)), 3),
        "feature_space": space.to_dict(),
        "cache": str(cache_path) if cache_path else "",
        "classes": list(split.classes),
        "split": split.info,
        "n_train": len(split.train_paths),
        "n_val": len(split.val_paths),
        "n_val_scored": len(y_true),
        "created": now_iso(),
        "tlx_version": version,
        "best_epoch": best["epoch"] + 1,
        "epochs_done": len(history),
        "early_stopped": bool(stopped),
        "seconds_per_epoch": round(seconds_per_epoch, 3),
        "history": history,
        # With --init-head: the fitted head's own val accuracy before any step (best_epoch 0 = it won).
        "init_head_val_accuracy": (init_eval or {}).get("val_accuracy"),
    }
    save_model(best_state, run_dir)
    write_finetune_config(
        run_dir,
        {
            "kind": "finetune",
            "backbone": cfg.backbone,
            "architecture": backbone.cfg.architecture,
            "weights": cfg.weights,
            "weights_id": space.weights_id,
            "weights_sha256": space.weights_sha256,
            "pooling": cfg.pool,
            "feature_dim": space.feature_dim,
            "classes": list(split.classes),
            "preprocessing": space.preprocessing.to_dict(),
            "unfreeze": cfg.unfreeze,
            "n_stages": len(backbone.stages),
            "init_head": cfg.init_head,
            "best_epoch": best["epoch"] + 1,
            "tlx_version": version,
        },
    )
    plot_confusion(np.asarray(m["confusion_matrix"]), split.classes, run_dir / "confusion.png")
    plot_learning_curve(history, run_dir / "learning_curve.png", best["epoch"] + 1, init_eval)
    write_metrics(run_dir, metrics)
    return metrics
