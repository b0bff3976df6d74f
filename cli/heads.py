"""``tlx fit-head`` and ``tlx runs``: stage two.

Only typer, the standard library and ``tlx.cli.common`` are imported here; scikit-learn,
matplotlib and (for the linear head only) torch are imported inside the command bodies.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlx.cli.common import JsonOpt, QuietOpt, emit_json, handle_errors, info, report


class ClassWeight(str, Enum):
    balanced = "balanced"


def register(app: typer.Typer) -> None:
    app.command("fit-head")(fit_head_command)
    app.command("runs")(runs_command)


@handle_errors
def fit_head_command(
    features: Annotated[Optional[Path], typer.Option(help="Feature cache file written by `tlx extract`, or a folder of caches [default: the most recent cache in $TLX_CACHE_DIR or ./cache].")] = None,
    clf: Annotated[str, typer.Option(help="Head: linear (default, torch softmax regression), logreg, svm, knn, ridge, rf, mlp.")] = "linear",
    param: Annotated[Optional[list[str]], typer.Option(help="Head hyper-parameter KEY=VALUE (repeatable), e.g. --param C=0.1.", metavar="KEY=VALUE")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="Search the head's main regularization parameter over a log grid, then refit with the best value.")] = False,
    class_weight: Annotated[Optional[ClassWeight], typer.Option(help="Weight classes inversely to their frequency (imbalanced data).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation fraction of the seeded, stratified split (used only when the data has no train/val split).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of that split (and of the sweep's folds).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Run folder to create [default: $TLX_RUNS_DIR or ./runs, then <time>-<clf>].", file_okay=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fit a classifier head on cached features and write a run folder (head, metrics, plots)."""
    from tlx.heads.fit import fit_head

    result = fit_head(
        features=features, clf=clf, params=param or [], sweep=sweep, class_weight=class_weight.value if class_weight else None,
        val_fraction=val_fraction, seed=seed, out=out, log=lambda msg: info(msg, quiet),
    )
    m = result.metrics
    set_params = ", ".join(f"{k}={v}" for k, v in m["params_set"].items())
    summary = (
        f"{result.run}: {result.clf}{f' ({set_params})' if set_params else ''} val accuracy {result.val_accuracy:.4f} "
        f"(balanced {m['balanced_accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}) on {m['n_val']} val / {m['n_train']} train images; "
        f"fit {result.fit_seconds:.2f} s"
    )
    if m.get("sweep"):
        s = m["sweep"]
        summary += f"; sweep chose {s['param']}={s['best']:g} ({s['selection']}, {m['sweep_seconds']:.1f} s)"
    report(summary, result.to_dict(), json_out, quiet)


@handle_errors
def runs_command(
    runs_dir: Annotated[Optional[Path], typer.Option("--dir", help="Folder holding run folders [default: $TLX_RUNS_DIR or ./runs].", file_okay=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the runs (heads and fine-tunings), best validation accuracy first."""
    from tlx.common.runfolder import default_runs_dir, list_runs

    root = runs_dir if runs_dir is not None else default_runs_dir()
    records = list_runs(root)
    rows = [_row(r) for r in records]
    if json_out:
        emit_json({"dir": str(root), "runs": rows})
        return
    if not rows:
        typer.echo(f"no runs in {root}: fit one with `tlx fit-head`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {root}")
    for name, justify in (("kind", "left"), ("head", "left"), ("params", "left"), ("backbone", "left"),
                          ("val acc", "right"), ("fit s", "right"), ("run", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        acc = f"{r['val_accuracy']:.4f}" if isinstance(r["val_accuracy"], (int, float)) else "-"
        secs = f"{r['fit_seconds']:.2f}" if isinstance(r["fit_seconds"], (int, float)) else "-"
        params = ", ".join(f"{k}={v}" for k, v in (r["params"] or {}).items())
        table.add_row(r["kind"], str(r["clf"]), params, str(r["backbone"]), acc, secs, r["run"])
    Console().print(table)


def _row(record: dict) -> dict:
    params = record.get("params_set")
    if params is None:
        params = record.get("params") or {}
    return {
        "run": record["run"],
        "kind": record.get("kind"),
        "clf": record.get("clf"),
        "params": params,
        "backbone": (record.get("feature_space") or {}).get("backbone"),
        "val_accuracy": record.get("val_accuracy"),
        "fit_seconds": record.get("fit_seconds"),
        "created": record.get("created"),
    }
