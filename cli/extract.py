"""``tlx extract``: stage one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ..extractor.options import option_help
from .common import Device, EngineOpt, JsonOpt, Pool, QuietOpt, RichReporter, handle_errors, list_skipped, report

DATA_HELP = (
    "Image folder DATA/<class>/<image>, split folder DATA/<split>/<class>/<image>, "
    "or a CSV manifest path,label[,split]."
)


def _option(name: str, *flags: str, **settings) -> Any:
    """The option of extractor.options.Options field ``name``, with its help text and default."""
    return typer.Option(*flags, help=option_help(name), **settings)


@handle_errors
def extract_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help=DATA_HELP)],
    backbone: Annotated[str | None, _option("backbone")] = None,
    weights: Annotated[Path | None, _option("weights", dir_okay=False)] = None,
    pooling: Annotated[Pool | None, _option("pooling", "--pool")] = None,
    stages: Annotated[int | None, _option("stages", min=0)] = None,
    batch_size: Annotated[int | None, _option("batch_size", min=1)] = None,
    workers: Annotated[int | None, _option("workers", min=0)] = None,
    device: Annotated[Device | None, _option("device")] = None,
    precision: Annotated[Literal["fp32", "fp16", "bf16"] | None, _option("precision")] = None,
    store_dtype: Annotated[Literal["float32", "float16"] | None, _option("store_dtype")] = None,
    views: Annotated[int | None, _option("views", min=0)] = None,
    view_recipe: Annotated[str | None, _option("view_recipe")] = None,
    engine: EngineOpt = "auto",
    cache_dir: Annotated[Path | None, _option("cache_dir", file_okay=False)] = None,
    strict: Annotated[bool, _option("strict", "--strict")] = False,
    rehash: Annotated[bool, _option("rehash", "--rehash")] = False,
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
    # The other options are extract()'s keywords, by the same names; None: not given.
    options = {name: value for name, value in ctx.params.items() if name not in ("quiet", "json_out")}
    result = extract(reporter=RichReporter(quiet=quiet), **options)
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
