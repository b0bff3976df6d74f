"""``tlx extract``: stage one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import (
    BatchSizeOpt,
    Device,
    EngineOpt,
    JsonOpt,
    Pool,
    QuietOpt,
    RichReporter,
    WorkersOpt,
    handle_errors,
    list_skipped,
    report,
)

HELP = {
    "data": "Image folder DATA/<class>/<image>, split folder DATA/<split>/<class>/<image>, "
    "or a CSV manifest path,label[,split].",
    "backbone": "Backbone name: efficientnet_lite0 (offline default), torchvision:<model>, timm:<model>; "
    "see `tlx info --backbones`.",
    "weights": "Local weights file (.pth state dict or .safetensors) instead of the backbone's pretrained ones.",
    "stages": "Also pool the body's last K inner stages (same forward pass) and append them to the final "
    "features; part of the feature space. 0: the final features alone.",
    "precision": "Autocast precision of the forward pass (part of the feature space: "
    "fp16/bf16 features get their own cache).",
    "store_dtype": "How the vectors are stored: float16 halves the cache (float32 vectors rounded to half, "
    "widened again when read; a cache file of its own).",
    "views": "Also store K augmented views of every image (deterministic, decoded once with the center crop); "
    "`fit-head --views` trains on them. [default: keep the cache's views; 0 drops them]",
    "view_recipe": "How views are made: crop (RandomResizedCrop scale 0.7-1 + flip), crop:S (scale S-1), "
    "flip (the mirror image; one view). [default: the cache's recipe, else crop]",
    "cache_dir": "Where feature caches live [default: $TLX_CACHE_DIR or ./tlx-cache].",
    "strict": "Fail (exit 1) on the first image that cannot be read instead of skipping it.",
    "rehash": "Read and hash every image again instead of trusting unchanged file stats.",
}


@handle_errors
def extract_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help=HELP["data"])],
    backbone: Annotated[str, typer.Option(help=HELP["backbone"])] = "efficientnet_lite0",
    weights: Annotated[Path | None, typer.Option(help=HELP["weights"], dir_okay=False)] = None,
    pool: Annotated[Pool, typer.Option(help="Global pooling of the final feature map.")] = "avg",
    stages: Annotated[int, typer.Option(min=0, help=HELP["stages"])] = 0,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: Annotated[Device, typer.Option(help="Where to run the backbone.")] = "auto",
    precision: Annotated[Literal["fp32", "fp16", "bf16"], typer.Option(help=HELP["precision"])] = "fp32",
    store_dtype: Annotated[Literal["float32", "float16"], typer.Option(help=HELP["store_dtype"])] = "float32",
    views: Annotated[int | None, typer.Option(min=0, help=HELP["views"])] = None,
    view_recipe: Annotated[str | None, typer.Option(help=HELP["view_recipe"])] = None,
    engine: EngineOpt = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help=HELP["cache_dir"], file_okay=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help=HELP["strict"])] = False,
    rehash: Annotated[bool, typer.Option("--rehash", help=HELP["rehash"])] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a frozen pretrained backbone once over DATA and cache the pooled features in HDF5.

    Under `torchrun --nproc_per_node N -m tlx extract DATA ...` the images are split among the
    N processes (and machines, with the cache folder on a shared file system); rank 0 prints."""
    from ..extractor.distributed import env_rank
    from ..extractor.extract import extract

    main_rank = env_rank() == 0
    quiet = quiet or not main_rank  # one summary and one progress bar per job, not per rank
    # The other options are extract()'s keywords, by the same names.
    options = {name: value for name, value in ctx.params.items() if name not in ("pool", "quiet", "json_out")}
    result = extract(pooling=pool, reporter=RichReporter(quiet=quiet), **options)
    if not main_rank:
        return
    list_skipped(result.failed, len(result.failed), quiet, " (all recorded in the cache)")
    summary = (
        f"{result.path}: {result.n_images} images x {result.feature_dim} ({result.backbone}); "
        f"{result.n_new} new, {result.n_reused} reused, {result.n_resumed} resumed, {result.n_removed} removed, "
        f"{result.n_failed} failed; {result.seconds:.1f} s"
    )
    if result.views:
        made = f"{result.n_views_new} new, {result.n_views_reused} reused"
        summary += f"; {result.views} {result.view_recipe} views per image: {made}"
    if result.world_size > 1:
        summary += f" on {result.world_size} processes"
    if result.n_failed:
        summary += f"  [warning: {result.n_failed} image(s) skipped]"
    report(summary, result.to_dict(), json_out, quiet)
