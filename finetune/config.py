"""The fine-tuning options, declared once, and how those not given are filled in: the value given,
then (with ``--init-head``) the head run's backbone, pooling and split, then the defaults."""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..common.progress import Reporter
from ..errors import CacheError, RunError, TlxError

if TYPE_CHECKING:
    from ..heads.runs import Run

OPTIMIZER_DEFAULTS = {"adamw": {"lr": 1e-4, "weight_decay": 0.01}, "sgd": {"lr": 1e-3, "weight_decay": 1e-4}}
ADAMW = OPTIMIZER_DEFAULTS["adamw"]
SELECT_ON = ("last", "val")


def _option(default, help: str, shown: str | None = None, kind: str = ""):
    """A field with its ``--help`` text, its default as people read it (``shown``) where other
    options decide it, and how a given value is normalized (``kind``: "path", "lowercase")."""
    return field(default=default, metadata={"help": help, "shown": shown, "kind": kind})


@dataclass
class FinetuneConfig:
    """Everything that decides what a run computes (a resumed run must have the same): the one
    declaration of the options, which ``finetune()`` takes by name and ``tlx finetune`` shows."""

    data: str = field(metadata={"kind": "path"})
    backbone: str = _option("", "Backbone name; see `tlx info --backbones`.", "--init-head's, else efficientnet_lite0")
    weights: str = _option(
        "", "Local weights file (.pth or .safetensors) to start from.", "the backbone's pretrained ones", "path"
    )
    pool: str = _option("avg", "Global pooling before the head.", "--init-head's, else avg")
    unfreeze: str = _option(  # a number of stages, or "all"
        "1", "Train the last N stages of the backbone (0 = head only, all = the whole network).", kind="lowercase"
    )
    epochs: int = _option(10, "Epochs.")
    lr: float = _option(ADAMW["lr"], "Peak learning rate of the unfrozen body.", "1e-4 adamw, 1e-3 sgd")
    head_lr: float = _option(1e-3, "Peak learning rate of the head.", "--lr with --init-head, else 10x --lr")
    optimizer: str = _option("adamw", "AdamW, or SGD with Nesterov momentum 0.9.")
    weight_decay: float = _option(
        ADAMW["weight_decay"], "Weight decay of weight matrices and kernels.", "0.01 adamw, 1e-4 sgd"
    )
    batch_size: int = _option(32, "Images per step, in total over all processes.")
    init_head: str = _option(
        "",
        "Start from the linear head of this `tlx fit-head` run (LP-FT); backbone and pooling come from it.",
        "none",
        "path",
    )
    augment: bool = _option(True, "Random resized crop + horizontal flip while training.", "on")
    train_bn: bool = _option(False, "Update BatchNorm statistics and parameters of the unfrozen stages.", "--freeze-bn")
    early_stop: int = _option(
        0,
        "Stop after this many epochs without a better validation accuracy (0 = never; needs "
        "--select-on val, since it chooses on the val labels).",
    )
    val_fraction: float = _option(
        0.2,
        "Validation share when the data has no split of its own; "
        "with --init-head, fine-tuning validates on exactly the head's validation images.",
    )
    seed: int = _option(0, "Seed of the split, the head and the data order.", "--init-head's split seed, else 0")
    warmup_epochs: float = _option(
        1.0, "Linear warm-up before the cosine decay, in epochs (at most a fifth of the run).", "1"
    )
    select_on: str = _option(
        "last",
        "Which epoch is kept and reported: last (chosen without the val labels, so its val score is honest) "
        "or val (the best val accuracy, --init-head's fitted head included as epoch 0: optimistic).",
    )


OPTIONS: dict[str, Field] = {f.name: f for f in fields(FinetuneConfig)}


def option_help(name: str) -> str:
    """The help text of option ``name`` with its default, as ``tlx finetune --help`` shows it."""
    meta = OPTIONS[name].metadata
    return f"{meta['help'].rstrip('.')} [default: {meta['shown'] or OPTIONS[name].default}]."


def explicit_options(given: dict) -> dict:
    """The options given (``None`` = not given), normalized; an unknown name is refused as Python
    refuses an unknown keyword."""
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"finetune() got unknown option(s) {', '.join(unknown)}: the options are the fields of "
            f"FinetuneConfig ({', '.join(OPTIONS)})"
        )
    return {k: normalize_option(k, v) for k, v in given.items() if v is not None}


def normalize_option(key: str, value):
    """``value`` in the type its :class:`FinetuneConfig` field declares (a path resolved)."""
    if value is None:
        return None
    if isinstance(value, Enum):  # a choice of the CLI
        value = value.value
    kind = OPTIONS[key].metadata.get("kind")
    if kind == "path":
        return str(Path(value).expanduser().resolve()) if str(value) else ""
    if kind == "lowercase":
        return str(value).strip().lower()
    return {"float": float, "int": int, "bool": bool}.get(str(OPTIONS[key].type), str)(value)


@dataclass
class InitHead:
    """The fitted linear head of a `tlx fit-head` run, in the form fine-tuning folds in."""

    run: Run
    linear: tuple  # (weight, bias, shift, scale) of ``softmax(((x - shift) / scale) @ weight.T + bias)``
    split: dict  # the head run's split, with the val_sha256 of its validation images
    cache: Path | None  # the head run's cache, where it still exists


def check_values(cfg: FinetuneConfig, world: int) -> None:
    if cfg.epochs < 1:
        raise TlxError(f"--epochs must be at least 1, not {cfg.epochs}")
    if cfg.batch_size < 1 or cfg.batch_size % world:
        raise TlxError(
            f"--batch-size {cfg.batch_size} must be a positive multiple of the number of processes ({world}): "
            "it is the total over all of them"
        )
    if cfg.unfreeze != "all" and not cfg.unfreeze.isdecimal():
        raise TlxError(f"--unfreeze must be a number of stages (0 = head only) or 'all', not {cfg.unfreeze!r}")
    if cfg.pool not in ("avg", "max", "avgmax"):
        raise TlxError(f"--pool must be avg, max or avgmax, not {cfg.pool!r}")
    for name in ("lr", "head_lr"):
        if not getattr(cfg, name) > 0:
            raise TlxError(f"--{name.replace('_', '-')} must be positive, not {getattr(cfg, name)}")
    if cfg.early_stop < 0:
        raise TlxError(f"--early-stop must be 0 (off) or a number of epochs, not {cfg.early_stop}")
    if cfg.select_on not in SELECT_ON:
        raise TlxError(f"--select-on must be {' or '.join(SELECT_ON)}, not {cfg.select_on!r}")
    if cfg.early_stop and cfg.select_on != "val":
        raise TlxError(
            f"--early-stop {cfg.early_stop} stops at the epoch the val labels call best, which is choosing on val: "
            "add --select-on val (its val score is then marked optimistic), or drop --early-stop"
        )


def resolve_config(explicit: dict, reporter: Reporter) -> tuple[FinetuneConfig, InitHead | None, Path | None]:
    """Fill the options not given: init-head run, most recent cache, defaults."""
    from ..cache.catalog import default_cache_dir
    from ..extractor.registry import DEFAULT_BACKBONE

    values = dict(explicit)
    init = load_init_head(values["init_head"]) if values.get("init_head") else None
    if init is not None:
        _take_from_head(values, init)
    cache_path = init.cache if init is not None else None
    if values.get("data") is None:
        source = f"the cache of {values['init_head']}" if cache_path is not None else "the most recent cache"
        cache_path = cache_path or newest_cache()
        if cache_path is None:
            raise CacheError(
                f"no DATA given and no feature cache in {default_cache_dir()} to take the dataset from: "
                "pass DATA (an image folder or CSV manifest), or run `tlx extract DATA` first"
            )
        values["data"] = str(dataset_of_cache(cache_path))
        reporter.message(f"no DATA given: using {values['data']}, the dataset of {source} ({cache_path})")
    values = {k: normalize_option(k, v) for k, v in values.items() if v is not None}
    opt = values["optimizer"] = values.get("optimizer") or "adamw"
    if opt not in OPTIMIZER_DEFAULTS:
        raise TlxError(f"--optimizer must be one of {', '.join(OPTIMIZER_DEFAULTS)}, not {opt!r}")
    values = {**OPTIMIZER_DEFAULTS[opt], **values}
    # A fitted head is already good: move it as gently as the body. A random one needs 10x.
    values.setdefault("head_lr", values["lr"] if values.get("init_head") else 10.0 * values["lr"])
    values["backbone"] = values.get("backbone") or DEFAULT_BACKBONE
    return FinetuneConfig(**values), init, cache_path


def _take_from_head(values: dict, init: InitHead) -> None:
    """Backbone, pooling, weights and split options from the head run; refuse ones that contradict it."""
    space, where = init.run.space, values["init_head"]
    if values.get("backbone") not in (None, space.backbone):
        raise TlxError(
            f"--backbone {values['backbone']} but the head in {where} was fitted on {space.backbone} features: "
            f"drop --backbone, or fit a head on {values['backbone']} features"
        )
    if values.get("pool") not in (None, space.pooling):
        raise TlxError(
            f"--pool {values['pool']} but the head in {where} was fitted on {space.pooling}-pooled features: "
            f"drop --pool, or fit a head on {values['pool']}-pooled features"
        )
    values["backbone"], values["pool"] = space.backbone, space.pooling
    split = init.split
    if split.get("source") == "seeded":
        given = values.get("val_fraction")
        if given is not None and float(given) != float(split.get("val_fraction", given)):
            raise TlxError(
                f"--val-fraction {given:g} but the head in {where} was validated on a {split['val_fraction']:g} split, "
                "and --init-head fine-tunes on exactly the head's split: drop --val-fraction, "
                "or fit a head with the fraction you want"
            )
        values["val_fraction"] = split.get("val_fraction")
        if values.get("seed") is None:
            values["seed"] = split.get("seed")
    if values.get("weights") is None and space.weights_id.startswith("file:"):
        from ..heads.runs import weights_path_for

        values["weights"] = weights_path_for(init.run)  # the file the head's features were made with


def load_init_head(run_dir: str) -> InitHead:
    """The fitted linear head of a `tlx fit-head` run, checked to be usable for fine-tuning."""
    from ..heads.base import NotExportableError
    from ..heads.registry import exportable_heads
    from ..heads.runs import load_run

    run = load_run(run_dir)
    if run.kind != "head":
        raise RunError(
            f"--init-head {run_dir} is a {run.kind} run: it needs a run made by `tlx fit-head` "
            "(a linear head on cached features)"
        )
    try:
        linear = tuple(run.head.linear_form())
    except NotExportableError:
        if getattr(run.head, "l2norm", False):
            why, fix = "this head L2-normalizes each feature row (l2norm=true)", "refit it with --param l2norm=false"
        else:
            names = exportable_heads()
            kinds = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
            why, fix = f"a {run.head.name} head has none", f"fit a {kinds} head"
        raise RunError(
            f"--init-head {run_dir}: fine-tuning starts from the head's linear form, and {why}: {fix} and pass that run"
        ) from None
    classes_ = getattr(run.head, "classes_", None)
    if classes_ is not None and list(np.asarray(classes_).tolist()) != list(range(len(run.classes))):
        raise RunError(
            f"--init-head {run_dir}: the head was fitted on {len(classes_)} of the run's {len(run.classes)} classes; "
            "fine-tuning needs a head that knows every class"
        )
    split = dict(run.info.get("split") or {})
    if "val_sha256" not in split:
        raise RunError(
            f"--init-head {run_dir} does not record which images the head was validated on (it was made by an "
            "older tlx), so fine-tuning cannot keep its training images out of validation: "
            "fit the head again with `tlx fit-head`"
        )
    cache = run.info.get("cache")
    return InitHead(run, linear, split, Path(cache) if cache and Path(cache).is_file() else None)


def newest_cache(dataset_root: Path | None = None) -> Path | None:
    """The most recent cache in the default cache folder; with ``dataset_root``, the newest readable one of it."""
    from ..cache.catalog import default_cache_dir, scan_caches

    for path, attrs in scan_caches(default_cache_dir()):
        # without DATA the newest is the one, damaged or not (dataset_of_cache says so); with it, a
        # damaged cache is not ours to report: fine-tuning reads images, not features
        if dataset_root is None or str((attrs or {}).get("dataset_root", "")) == str(dataset_root):
            return path
    return None


def dataset_of_cache(cache_path: Path) -> Path:
    from ..cache.h5format import read_attrs

    try:
        attrs = read_attrs(cache_path)
    except (OSError, KeyError) as exc:
        raise CacheError(
            f"{cache_path} is not a readable feature cache ({type(exc).__name__}): "
            "pass DATA, or delete it and re-run `tlx extract`"
        ) from None
    root = str(attrs.get("dataset_root", ""))
    if not root:
        raise CacheError(f"{cache_path} does not record its dataset: pass DATA, or re-run `tlx extract`")
    if attrs.get("dataset_layout") == "csv":
        return Path(root) / f"{attrs.get('dataset_name', '')}.csv"
    return Path(root)


def selection_record(cfg: FinetuneConfig) -> dict:
    """What ``metrics.json`` and ``finetune.json`` say about how the reported epoch was chosen."""
    return {"on": "val", "optimistic": True} if cfg.select_on == "val" else {"on": "last epoch", "optimistic": False}
