"""The options of ``tlx extract``, declared once: ``extract()`` takes them by name and the CLI shows
them (no h5py or torch imported here: every command's start-up reads this)."""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

from ..errors import TlxError
from .registry import DEFAULT_BACKBONE


def _default_cache_dir() -> Path:
    from ..cache.catalog import default_cache_dir

    return default_cache_dir()


def _option(default, help: str = "", shown: str | None = None):
    """A field with its ``tlx extract --help`` text and its default as people read it (``shown``)."""
    return field(default=default, metadata={"help": help, "shown": shown})


def _from_env(name: str, kind: type, default: str):
    return field(default_factory=lambda: kind(os.environ.get(name, default)))


@dataclass
class Options:
    """The extract options, declared once: ``extract()`` takes them by name, ``tlx extract`` shows
    them, and every rank of a torchrun job receives them on its command line."""

    backbone: str = _option(
        DEFAULT_BACKBONE,
        "Backbone name: efficientnet_lite0 (offline default), torchvision:<model>, timm:<model>; "
        "see `tlx info --backbones`.",
    )
    weights: str | None = _option(  # a path
        None, "Local weights file (.pth state dict or .safetensors) instead of the backbone's pretrained ones."
    )
    pooling: str = _option("avg", "Global pooling of the final feature map.")
    stages: int = _option(
        0,
        "Also pool the body's last K inner stages (same forward pass) and append them to the final "
        "features; part of the feature space. 0: the final features alone.",
    )
    batch_size: int = _option(32, "Images per forward pass.")
    workers: int | None = _option(None, "DataLoader decoding processes.", "number of CPUs, at most 4")
    device: str = _option("auto", "Where to run the backbone.")
    precision: str = _option(
        "fp32",
        "Autocast precision of the forward pass (part of the feature space: fp16/bf16 features get their own cache).",
    )
    store_dtype: str = _option(
        "float32",
        "How the vectors are stored: float16 halves the cache (float32 vectors rounded to half, "
        "widened again when read; a cache file of its own).",
    )
    views: int | None = _option(
        None,
        "Also store K augmented views of every image (deterministic, decoded once with the center crop); "
        "`fit-head --views` trains on them.",
        "keep the cache's views; 0 drops them",
    )
    view_recipe: str | None = _option(
        None,
        "How views are made: crop (RandomResizedCrop scale 0.7-1 + flip), crop:S (scale S-1), "
        "flip (the mirror image; one view).",
        "the cache's recipe, else crop",
    )
    engine: str = _option("auto")  # its help is the one `tlx predict` shows too (cli.common.EngineOpt)
    cache_dir: Path = field(
        default_factory=_default_cache_dir,
        metadata={"help": "Where feature caches live.", "shown": "$TLX_CACHE_DIR or ./tlx-cache"},
    )
    strict: bool = _option(False, "Fail (exit 1) on the first image that cannot be read instead of skipping it.")
    rehash: bool = _option(False, "Read and hash every image again instead of trusting unchanged file stats.")
    # how many rows, or seconds, a part may wait before it is written (no CLI option: tests and benchmarks)
    flush_rows: int = _from_env("TLX_FLUSH_ROWS", int, "4096")
    flush_seconds: float = _from_env("TLX_FLUSH_SECONDS", float, "5")

    def __post_init__(self):
        self.cache_dir = Path(self.cache_dir)

    def check(self) -> None:
        """Refuse a bad value before any work, naming its option."""
        if self.pooling not in ("avg", "max", "avgmax"):
            raise TlxError(f"--pool must be avg, max or avgmax, not {self.pooling!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise TlxError(f"--precision must be fp32, fp16 or bf16, not {self.precision!r}")
        if self.store_dtype not in ("float32", "float16"):
            raise TlxError(f"--store-dtype must be float32 or float16, not {self.store_dtype!r}")
        if self.batch_size < 1:
            raise TlxError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.stages < 0:
            raise TlxError(f"--stages must be 0 (the final features alone) or more, not {self.stages}")
        if self.views is not None or self.view_recipe is not None:
            from .augment import check_count, parse_recipe

            check_count(self.views or 0, parse_recipe(self.view_recipe))


OPTIONS: dict[str, Field] = {f.name: f for f in fields(Options)}


def option_help(name: str) -> str:
    """The help text of option ``name`` with its default, as ``tlx extract --help`` shows it."""
    meta, default = OPTIONS[name].metadata, OPTIONS[name].default
    shown = meta["shown"] or ("" if default is None or isinstance(default, bool) else default)
    return f"{meta['help']} [default: {shown}]" if shown != "" else meta["help"]
