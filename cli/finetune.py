"""``tlx finetune``: the end-to-end path (unfreeze the top of the backbone, train it with a head)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

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
    data: Annotated[
        Path | None,
        typer.Argument(
            help="Image folder, split folder or CSV manifest "
            "[default: the dataset of the most recent cache, or of --init-head's cache]."
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Backbone name [default: --init-head's, else efficientnet_lite0]; see `tlx info --backbones`."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Local weights file (.pth or .safetensors) to start from instead of the backbone's pretrained ones.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    pool: Annotated[
        Pool | None, typer.Option(help="Global pooling before the head [default: --init-head's, else avg].")
    ] = None,
    unfreeze: Annotated[
        str | None,
        typer.Option(
            callback=_unfreeze,
            metavar="N|all",
            help="Train the last N stages of the backbone (0 = head only, all = the whole network) [default: 1].",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs [default: 10].")] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate of the unfrozen body [default: 1e-4 adamw, 1e-3 sgd].")
    ] = None,
    head_lr: Annotated[
        float | None,
        typer.Option(help="Peak learning rate of the head [default: --lr with --init-head, else 10x --lr]."),
    ] = None,
    optimizer: Annotated[
        Optim | None, typer.Option(help="AdamW, or SGD with Nesterov momentum 0.9 [default: adamw].")
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(min=0.0, help="Weight decay of weight matrices and kernels [default: 0.01 adamw, 1e-4 sgd]."),
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Linear warm-up before the cosine decay, in epochs (at most a fifth of the run) [default: 1]."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per step, in total over all processes [default: 32].")
    ] = None,
    init_head: Annotated[
        Path | None,
        typer.Option(
            help="Start from the linear head of this `tlx fit-head` run (LP-FT); backbone and pooling come from it.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment", help="Random resized crop + horizontal flip while training [default: on]."
        ),
    ] = None,
    train_bn: Annotated[
        bool | None,
        typer.Option(
            "--train-bn/--freeze-bn",
            help="Update BatchNorm statistics and parameters of the unfrozen stages [default: --freeze-bn].",
        ),
    ] = None,
    early_stop: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="PATIENCE",
            help="Stop after this many epochs without a better validation accuracy (0 = never; needs "
            "--select-on val, since it chooses on the val labels) [default: 0].",
        ),
    ] = None,
    select_on: Annotated[
        EpochSelect | None,
        typer.Option(
            help="Which epoch is kept and reported: last (chosen without the val labels, so its val score is honest) "
            "or val (the best val accuracy, --init-head's fitted head included as epoch 0: optimistic) "
            "[default: last].",
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Validation share when the data has no split of its own [default: 0.2]; "
            "with --init-head, fine-tuning validates on exactly the head's validation images."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the split, the head and the data order [default: --init-head's split seed, else 0]."
        ),
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
    result = finetune(
        data,
        backbone=backbone,
        weights=weights,
        pool=pool.value if pool else None,
        unfreeze=unfreeze,
        epochs=epochs,
        lr=lr,
        head_lr=head_lr,
        optimizer=optimizer.value if optimizer else None,
        weight_decay=weight_decay,
        batch_size=batch_size,
        init_head=init_head,
        augment=augment,
        train_bn=train_bn,
        early_stop=early_stop,
        val_fraction=val_fraction,
        seed=seed,
        warmup_epochs=warmup_epochs,
        select_on=select_on.value if select_on else None,
        workers=workers,
        device=device.value,
        out=out,
        resume=resume,
        reporter=reporter,
    )
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
