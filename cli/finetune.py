"""``tlx finetune``: the end-to-end path (unfreeze the top of the backbone, train it with a head)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..finetune.config import OPTIONS, option_help
from .common import Device, JsonOpt, Pool, QuietOpt, RichReporter, handle_errors, info, report


class Optim(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


class EpochSelect(str, Enum):
    last = "last"
    val = "val"


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)


def _unfreeze(value: str | None) -> str | None:
    if value is None or value.strip().lower() == "all":
        return value
    try:
        if int(value) >= 0:
            return value
    except ValueError:
        pass
    raise typer.BadParameter(f"expected a number of stages (0 = head only) or 'all', not {value!r}")


@handle_errors
def finetune_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Argument(
            help="Image folder, split folder or CSV manifest "
            "[default: the dataset of the most recent cache, or of --init-head's cache]."
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help=option_help("backbone")),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help=option_help("weights"),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    pool: Annotated[Pool | None, typer.Option(help=option_help("pool"))] = None,
    unfreeze: Annotated[
        str | None,
        typer.Option(
            callback=_unfreeze,
            metavar="N|all",
            help=option_help("unfreeze"),
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help=option_help("epochs"))] = None,
    lr: Annotated[float | None, typer.Option(help=option_help("lr"))] = None,
    head_lr: Annotated[
        float | None,
        typer.Option(help=option_help("head_lr")),
    ] = None,
    optimizer: Annotated[Optim | None, typer.Option(help=option_help("optimizer"))] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(min=0.0, help=option_help("weight_decay")),
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        typer.Option(min=0.0, help=option_help("warmup_epochs")),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help=option_help("batch_size"))] = None,
    init_head: Annotated[
        Path | None,
        typer.Option(
            help=option_help("init_head"),
            exists=True,
            file_okay=False,
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help=option_help("augment")),
    ] = None,
    train_bn: Annotated[
        bool | None,
        typer.Option(
            "--train-bn/--freeze-bn",
            help=option_help("train_bn"),
        ),
    ] = None,
    early_stop: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="PATIENCE",
            help=option_help("early_stop"),
        ),
    ] = None,
    select_on: Annotated[
        EpochSelect | None,
        typer.Option(
            help=option_help("select_on"),
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help=option_help("val_fraction")),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help=option_help("seed")),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="DataLoader decoding processes [default: number of CPUs, at most 4].")
    ] = None,
    device: Annotated[
        Device, typer.Option(help="Where to train (under torchrun: each process's local GPU, or the CPU).")
    ] = Device.auto,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run folder [default: a new runs/<time>-finetune-<backbone>]; with --resume, the run to continue.",
            file_okay=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run in --out from its last checkpoint; options given must match it."
        ),
    ] = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune the top stages of a pretrained backbone together with a linear head; optionally
    start from a head fitted on the cached features (--init-head, "LP-FT")."""
    from ..common.device import check_device

    check_device(device.value)  # before torch, the data or a network is loaded
    from ..finetune.train import finetune

    reporter = RichReporter(quiet=quiet)
    # The options of FinetuneConfig pass through by name: `finetune` normalizes and checks them.
    options = {name: value for name, value in ctx.params.items() if name in OPTIONS and name != "data"}
    result = finetune(data, workers=workers, device=device.value, out=out, resume=resume, reporter=reporter, **options)
    import os

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
