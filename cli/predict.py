"""``tlx predict`` and ``tlx export``: use a run folder on new images, or ship it as one module."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    Device,
    Engine,
    EngineOpt,
    JsonOpt,
    QuietOpt,
    RichReporter,
    emit_json,
    handle_errors,
    info,
    report,
)


class ExportFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


RunOpt = Annotated[
    Path,
    typer.Option(
        "--run", help="A run folder written by `tlx fit-head` or `tlx finetune` (see `tlx runs`).", file_okay=False
    ),
]


# torchrun's own parser takes `--run` as an abbreviation of its --run-path, so under torchrun
# predict needs a spelling that abbreviates none of torchrun's options.
PredictRunOpt = Annotated[
    Path,
    typer.Option(
        "--run",
        "--run-folder",
        help="A run folder written by `tlx fit-head` or `tlx finetune` (see `tlx runs`); "
        "under torchrun spell it --run-folder.",
        file_okay=False,
    ),
]


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
    app.command("export")(export_command)


@handle_errors
def predict_command(
    images: Annotated[
        list[Path],
        typer.Argument(
            help="Image files and/or folders (searched recursively; hidden files and non-image extensions are skipped)."
        ),
    ],
    run: PredictRunOpt,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the predictions CSV here [default: print the CSV to stdout].", dir_okay=False),
    ] = None,
    top_k: Annotated[
        int, typer.Option(min=1, help="Also list the K most likely classes per image (columns top2, top2_score, ...).")
    ] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=0, help="DataLoader decoding processes [default: number of CPUs, at most 4].")
    ] = None,
    device: Annotated[
        Device, typer.Option(help="Where to run the network for images not in the run's cache.")
    ] = Device.auto,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Test-time augmentation: average the probabilities of each image's center view and its "
            "mirror image (the mirror always goes through the backbone). Head runs only.",
        ),
    ] = False,
    engine: EngineOpt = Engine.auto,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict the class of images with a run: reuses the run's cached features for images
    already in it (same bytes), computes the rest, and writes path,label,score,p_<class>... rows."""
    from ..common.device import check_device
    from ..extractor.engines import check_engine
    from ..heads.runs import load_run
    from ..inference.images import collect_images
    from ..inference.predict import predict_chunks
    from ..inference.rows import check_predictions_out, csv_columns, write_csv_stream

    check_device(device.value)  # before the run is loaded or any image read
    check_engine(engine.value, device.value)
    if out is not None:
        check_predictions_out(out)  # a photo or a run's file is never overwritten
    loaded = load_run(run)
    paths = collect_images(images)
    from ..extractor.distributed import env_rank

    main_rank = env_rank() == 0
    quiet = quiet or not main_rank  # under torchrun, rank 0 alone reports and writes the CSV
    rounds = predict_chunks(
        loaded,
        paths,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        reporter=RichReporter(quiet=quiet),
        tta=tta,
        engine=engine.value,
    )
    sink = out if out is not None else (None if json_out else sys.stdout)
    if not main_rank:
        for _ in rounds:  # the other ranks compute their shares; rank 0 writes
            pass
        return
    rows: list[dict] = []  # with --json and no --out, the JSON carries the predictions
    if json_out and out is None:
        rounds = (_keep_rows(r, rows, top_k) for r in rounds)
    preds = write_csv_stream(rounds, csv_columns(loaded.classes, top_k), sink, top_k)
    for failure in preds.failed[:20]:
        info(f"skipped {failure['path']}: {failure['reason']}", quiet)
    if preds.n_failed > 20:
        info(f"... and {preds.n_failed - 20} more", quiet)

    acc = preds.folder_accuracy
    summary = (
        f"{preds.n_images} image(s) predicted with {loaded.path} ({preds.n_reused} from the cache, "
        f"{preds.n_computed} computed), {preds.n_failed} skipped; {preds.seconds:.1f} s"
    )
    if acc is not None:
        summary += f"; accuracy against the folder names {acc:.4f}"
    if out is not None:
        summary += f" -> {out}"
    if preds.n_failed:
        summary += f"  [warning: {preds.n_failed} image(s) skipped]"
    # The CSV owns stdout when it goes there; the summary then goes to stderr.
    if json_out or out is None:
        info(summary, quiet)
    else:
        typer.echo(summary)
    if json_out:
        result = {
            "run": str(loaded.path),
            "kind": loaded.kind,
            "out": str(out) if out is not None else None,
            "n_images": preds.n_images,
            "n_reused": preds.n_reused,
            "n_computed": preds.n_computed,
            "tta": tta,
            "n_failed": preds.n_failed,
            "failed": preds.failed,
            "folder_accuracy": acc,
            "seconds": preds.seconds,
            "classes": list(loaded.classes),
            "engine": preds.engine,
        }
        if out is None:
            result["predictions"] = rows
        emit_json(result)


def _keep_rows(preds, rows: list, top_k: int):
    rows += preds.rows(top_k)
    return preds


@handle_errors
def export_command(
    run: RunOpt,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="torchscript (torch.jit) or onnx.")
    ] = ExportFormat.onnx,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file [default: model.pt or model.onnx inside the run folder]; "
            "the sidecar JSON goes to FILE.json.",
            dir_okay=False,
        ),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a run as one module: preprocessed images (N, 3, S, S) in, class probabilities out.
    A sidecar JSON next to the file lists the classes and the preprocessing."""
    from ..heads.runs import load_run
    from ..inference.export import export_run

    loaded = load_run(run)
    result = export_run(loaded, format.value, out)
    diff = (
        f"max |diff| {result.max_abs_diff:.1e} ({result.checked_with})"
        if result.max_abs_diff is not None
        else result.checked_with
    )
    summary = (
        f"{result.path}: {len(result.classes)} classes, input {'x'.join(map(str, result.input_shape))}; "
        f"checked: {diff}; sidecar {result.sidecar}; {result.seconds:.1f} s"
    )
    report(summary, result.to_dict(), json_out, quiet)
