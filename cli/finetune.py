"""``tlx finetune``: the end-to-end path (unfreeze the top of the backbone, train it with a head)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ..finetune.config import OPTIONS, option_help
from .common import Device, JsonOpt, Pool, QuietOpt, RichReporter, WorkersOpt, handle_errors, info, report

# The options that are no field of FinetuneConfig (those get theirs from it).
HELP = {
    "data": "Image folder, split folder or CSV manifest "
    "[default: the dataset of the most recent cache, or of --init-head's cache].",
    "device": "Where to train (under torchrun: each process's local GPU, or the CPU).",
    "out": "Run folder [default: a new runs/<time>-finetune-<backbone>]; with --resume, the run to continue.",
    "resume": "Continue the run in --out from its last checkpoint; options given must match it.",
}


def _config_option(name: str, *flags: str, **settings) -> Any:
    """The option of FinetuneConfig field ``name``, with the config's help text and default."""
    return typer.Option(*flags, help=option_help(name), **settings)


@handle_errors
def finetune_command(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help=HELP["data"])] = None,
    backbone: Annotated[str | None, _config_option("backbone")] = None,
    weights: Annotated[Path | None, _config_option("weights", exists=True, dir_okay=False)] = None,
    pool: Annotated[Pool | None, _config_option("pool")] = None,
    unfreeze: Annotated[str | None, _config_option("unfreeze", metavar="N|all")] = None,
    epochs: Annotated[int | None, _config_option("epochs", min=1)] = None,
    lr: Annotated[float | None, _config_option("lr")] = None,
    head_lr: Annotated[float | None, _config_option("head_lr")] = None,
    optimizer: Annotated[Literal["adamw", "sgd"] | None, _config_option("optimizer")] = None,
    weight_decay: Annotated[float | None, _config_option("weight_decay", min=0.0)] = None,
    warmup_epochs: Annotated[float | None, _config_option("warmup_epochs", min=0.0)] = None,
    batch_size: Annotated[int | None, _config_option("batch_size", min=1)] = None,
    init_head: Annotated[Path | None, _config_option("init_head", exists=True, file_okay=False)] = None,
    augment: Annotated[bool | None, _config_option("augment", "--augment/--no-augment")] = None,
    train_bn: Annotated[bool | None, _config_option("train_bn", "--train-bn/--freeze-bn")] = None,
    early_stop: Annotated[int | None, _config_option("early_stop", min=0, metavar="PATIENCE")] = None,
    select_on: Annotated[Literal["last", "val"] | None, _config_option("select_on")] = None,
    val_fraction: Annotated[float | None, _config_option("val_fraction")] = None,
    seed: Annotated[int | None, _config_option("seed")] = None,
    workers: WorkersOpt = None,
    device: Annotated[Device, typer.Option(help=HELP["device"])] = "auto",
    out: Annotated[Path | None, typer.Option(help=HELP["out"], file_okay=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help=HELP["resume"])] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune the top stages of a pretrained backbone together with a linear head; optionally
    start from a head fitted on the cached features (--init-head, "LP-FT")."""
    from ..common.device import check_device

    check_device(device)  # before torch, the data or a network is loaded
    from ..finetune.train import finetune

    reporter = RichReporter(quiet=quiet)
    # The options of FinetuneConfig pass through by name: `finetune` normalizes and checks them.
    options = {name: value for name, value in ctx.params.items() if name in OPTIONS and name != "data"}
    result = finetune(data, workers=workers, device=device, out=out, resume=resume, reporter=reporter, **options)
    if int(os.environ.get("RANK", 0)) != 0:
        return  # under torchrun only rank 0 reports
    if result.n_skipped:
        info(f"warning: {result.n_skipped} unreadable image(s) skipped", quiet)
    if result.selection.get("optimistic"):
        chosen = f"best epoch {result.best_epoch} of {result.epochs_done} on the val labels: optimistic"
    else:
        chosen = f"epoch {result.best_epoch} of {result.epochs_done}, the last: chosen without the val labels"
    summary = (
        f"{result.run}: val accuracy {result.val_accuracy:.4f} ({chosen}"
        f"{', stopped early' if result.early_stopped else ''}); "
        f"{result.seconds_per_epoch:.1f} s/epoch, {result.seconds:.1f} s"
    )
    report(summary, result.to_dict(), json_out, quiet)
