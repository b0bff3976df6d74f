"""``tlx demo``: the whole job on scikit-learn's handwritten digits, with nothing to download;
everything lands under one folder (``./tlx-demo`` by default): ``digits/``, ``cache/`` and ``runs/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, RichReporter, handle_errors, info, report

DEFAULT_OUT = Path("tlx-demo")
PER_CLASS_TRAIN = 30  # validation gets half as many


def _new_run_dir(runs: Path, tag: str) -> Path:
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
    for i in range(1, 1000):
        path = runs / (stem if i == 1 else f"{stem}-{i}")
        if not path.exists():
            return path
    raise FileExistsError(f"too many runs named {stem}-* in {runs}")


def run_demo(out: Path, backbone: str | None, per_class: int, workers: int | None, reporter, log) -> dict:
    """Write the digits, extract them, fit the linear head; returns what was done and where (the JSON)."""
    from ..common.outputs import check_output_folder
    from ..extractor.demo_data import write_digits
    from ..extractor.extract import extract
    from ..extractor.registry import DEFAULT_BACKBONE
    from ..heads.training.fit import fit_head

    started = time.perf_counter()
    check_output_folder(out)  # never inside a run or a cache
    backbone = backbone or DEFAULT_BACKBONE
    data = write_digits(out / "digits", per_class, max(1, per_class // 2))
    log(
        f"wrote {data.n_images} handwritten digits (scikit-learn's load_digits) to {data.root}: "
        f"{data.n_train} train, {data.n_val} val"
    )
    t0 = time.perf_counter()
    extracted = extract(data.root, backbone=backbone, cache_dir=out / "cache", workers=workers, reporter=reporter)
    extract_seconds = time.perf_counter() - t0
    log(
        f"features: {extracted.path} ({extracted.n_images} x {extracted.feature_dim}, "
        f"{extracted.n_new} extracted, {extracted.n_reused} reused; {extract_seconds:.1f} s)"
    )
    fitted = fit_head(extracted.path, clf="linear", out=_new_run_dir(out / "runs", "linear"), log=log)
    return {
        "out": str(out),
        "data": str(data.root),
        "cache": extracted.path,
        "run": str(fitted.run),
        "backbone": extracted.backbone,
        "clf": fitted.clf,
        "n_images": extracted.n_images,
        "n_train": int(fitted.metrics.get("n_train", data.n_train)),
        "n_val": int(fitted.metrics.get("n_val", data.n_val)),
        "n_extracted": extracted.n_new + extracted.n_resumed,  # 0 on a re-run
        "val_accuracy": float(fitted.val_accuracy or 0.0),  # the demo data always has a val split
        "extract_seconds": round(extract_seconds, 3),
        "fit_seconds": round(float(fitted.fit_seconds), 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


@handle_errors
def demo_command(
    out: Annotated[
        Path, typer.Option(help="Folder for the demo's digits/, cache/ and runs/.", file_okay=False)
    ] = DEFAULT_OUT,
    backbone: Annotated[str | None, typer.Option(hidden=True, help="Another backbone (for tests: tiny_cnn).")] = None,
    per_class: Annotated[
        int, typer.Option(hidden=True, min=2, help="Training images per digit; validation gets half as many.")
    ] = PER_CLASS_TRAIN,
    workers: Annotated[int | None, typer.Option(hidden=True, min=0, help="DataLoader decoding processes.")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole job on an embedded dataset, with no download: write scikit-learn's handwritten
    digits as PNG class folders, extract them with the default backbone, fit the linear head."""
    demo = run_demo(out, backbone, per_class, workers, RichReporter(quiet=quiet), lambda m: info(m, quiet))
    lines = [
        f"demo: {demo['n_images']} images of handwritten digits ({demo['n_train']} train, {demo['n_val']} val), "
        f"10 classes, backbone {demo['backbone']}",
        f"  validation accuracy of the {demo['clf']} head: {demo['val_accuracy']:.4f}",
        f"  {demo['seconds']:.1f} s in all (extract {demo['extract_seconds']:.1f} s for {demo['n_extracted']} "
        f"new images, fit {demo['fit_seconds']:.2f} s)",
        f"  run folder: {demo['run']}",
        f"  cache file: {demo['cache']}",
        f"  next: tlx predict {Path(demo['data']) / 'val' / '7'} --run {demo['run']}",
    ]
    report("\n".join(lines), demo, json_out, quiet)
