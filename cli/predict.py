"""``tlx predict`` and ``tlx export``: use a run folder on new images, or ship it as one module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from .common import (
    BatchSizeOpt,
    Device,
    EngineOpt,
    JsonOpt,
    QuietOpt,
    RichReporter,
    WorkersOpt,
    handle_errors,
    info,
    list_skipped,
    report,
)

TOTALS = ("n_images", "n_reused", "n_computed", "n_failed", "failed", "folder_accuracy", "seconds", "engine")

RUN_HELP = "A run folder written by `tlx fit-head` or `tlx finetune` (see `tlx runs`)"
HELP = {
    "images": "Image files and/or folders (searched recursively; hidden files and non-image extensions are skipped).",
    # torchrun's own parser takes `--run` as an abbreviation of its --run-path, so under torchrun
    # predict needs a spelling that abbreviates none of torchrun's options.
    "run": f"{RUN_HELP}; under torchrun spell it --run-folder.",
    "out": "Write the predictions CSV here [default: print the CSV to stdout].",
    "top_k": "Also list the K most likely classes per image (columns top2, top2_score, ...).",
    "device": "Where to run the network for images not in the run's cache.",
    "tta": "Test-time augmentation: average the probabilities of each image's center view and its "
    "mirror image (the mirror always goes through the backbone). Head runs only.",
    "export_out": "Output file [default: model.pt or model.onnx inside the run folder]; "
    "the sidecar JSON goes to FILE.json.",
}


@handle_errors
def predict_command(
    images: Annotated[list[Path], typer.Argument(help=HELP["images"])],
    run: Annotated[Path, typer.Option("--run", "--run-folder", help=HELP["run"], file_okay=False)],
    out: Annotated[Path | None, typer.Option(help=HELP["out"], dir_okay=False)] = None,
    top_k: Annotated[int, typer.Option(min=1, help=HELP["top_k"])] = 1,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = None,
    device: Annotated[Device, typer.Option(help=HELP["device"])] = "auto",
    tta: Annotated[bool, typer.Option("--tta", help=HELP["tta"])] = False,
    engine: EngineOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Predict the class of images with a run: reuses the run's cached features for images
    already in it (same bytes), computes the rest, and writes path,label,score,p_<class>... rows."""
    from ..common.device import check_device
    from ..extractor.distributed import env_rank
    from ..extractor.engines import check_engine
    from ..heads.runs import load_run
    from ..inference.images import collect_images
    from ..inference.predict import predict_chunks
    from ..inference.rows import check_predictions_out, csv_columns, write_csv_stream

    check_device(device)  # before the run is loaded or any image read
    check_engine(engine, device)
    if out is not None:
        check_predictions_out(out)  # a photo or a run's file is never overwritten
    loaded = load_run(run)
    main_rank = env_rank() == 0
    quiet = quiet or not main_rank  # under torchrun, rank 0 alone reports and writes the CSV
    paths = collect_images(images)
    reporter = RichReporter(quiet=quiet)
    rounds = predict_chunks(
        loaded, paths, batch_size=batch_size, workers=workers, device=device, reporter=reporter, tta=tta, engine=engine
    )
    sink = out if out is not None else (None if json_out else sys.stdout)
    if not main_rank:
        for _ in rounds:  # the other ranks compute their shares; rank 0 writes
            pass
        return
    rows: list[dict] = []
    if json_out and out is None:
        rounds = (_keep_rows(r, rows, top_k) for r in rounds)
    preds = write_csv_stream(rounds, csv_columns(loaded.classes, top_k), sink, top_k)
    list_skipped(preds.failed, preds.n_failed, quiet)
    summary = _summary(preds, loaded.path, out)
    if out is None and not json_out:
        info(summary, quiet)  # the CSV owns stdout
        return
    result: dict[str, Any] = {"run": str(loaded.path), "kind": loaded.kind, "out": out and str(out), "tta": tta}
    result.update({key: getattr(preds, key) for key in TOTALS})
    result["classes"] = list(loaded.classes)
    if out is None:
        result["predictions"] = rows  # with --json and no --out, the JSON carries the predictions
    report(summary, result, json_out, quiet)


def _summary(preds, run: Path, out: Path | None) -> str:
    summary = (
        f"{preds.n_images} image(s) predicted with {run} ({preds.n_reused} from the cache, "
        f"{preds.n_computed} computed), {preds.n_failed} skipped; {preds.seconds:.1f} s"
    )
    if preds.folder_accuracy is not None:
        summary += f"; accuracy against the folder names {preds.folder_accuracy:.4f}"
    if out is not None:
        summary += f" -> {out}"
    if preds.n_failed:
        summary += f"  [warning: {preds.n_failed} image(s) skipped]"
    return summary


def _keep_rows(preds, rows: list, top_k: int):
    rows += preds.rows(top_k)
    return preds


@handle_errors
def export_command(
    run: Annotated[Path, typer.Option("--run", help=f"{RUN_HELP}.", file_okay=False)],
    format: Annotated[
        Literal["torchscript", "onnx"], typer.Option("--format", help="torchscript (torch.jit) or onnx.")
    ] = "onnx",
    out: Annotated[Path | None, typer.Option(help=HELP["export_out"], dir_okay=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a run as one module: preprocessed images (N, 3, S, S) in, class probabilities out.
    A sidecar JSON next to the file lists the classes and the preprocessing."""
    from ..heads.runs import load_run
    from ..inference.export import export_run

    loaded = load_run(run)
    result = export_run(loaded, format, out)
    diff = result.checked_with
    if result.max_abs_diff is not None:
        diff = f"max |diff| {result.max_abs_diff:.1e} ({diff})"
    summary = (
        f"{result.path}: {len(result.classes)} classes, input {'x'.join(map(str, result.input_shape))}; "
        f"checked: {diff}; sidecar {result.sidecar}; {result.seconds:.1f} s"
    )
    report(summary, result.to_dict(), json_out, quiet)
