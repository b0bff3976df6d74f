"""``tlx audit``: the data set's own mistakes from its feature cache (``tlx.audit``).

Only typer, the standard library and ``tlx.cli.common`` are imported here; the audit (numpy,
the linear head, cleanlab when installed) is imported inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, emit_json, handle_errors, info


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)


@handle_errors
def audit_command(
    features: Annotated[
        Path | None,
        typer.Option(
            help="Feature cache written by `tlx extract`, or a folder of caches "
            "[default: the most recent cache in $TLX_CACHE_DIR or ./cache]."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder to write audit.json and audit.png into.", file_okay=False)] = Path(
        "."
    ),
    near_threshold: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Cosine similarity of the centered features above which two images are near duplicates "
            "(0.80 calibrated on ants/bees: JPEG q70 0.8x copies scored 0.85-0.95, distinct photos at most 0.70).",
        ),
    ] = 0.80,
    neighbors: Annotated[
        int, typer.Option(min=1, help="Nearest neighbours per image for the label vote and the outlier score.")
    ] = 10,
    views: Annotated[
        bool, typer.Option(help="Also score each held-out image on its augmented views (caches with --views K).")
    ] = True,
    top: Annotated[
        int, typer.Option(min=0, help="Findings of each kind shown in the table (all are in audit.json).")
    ] = 10,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Find duplicates (exact and near; within a class, across classes, across splits), likely label
    errors, outliers and undecodable images, and count the classes per split, from the cache alone.
    Writes audit.json (every finding) and audit.png; `fit-head --exclude audit.json` fits without them."""
    from ..quality import audit

    report = audit(
        features, near_threshold=near_threshold, neighbors=neighbors, views=views, log=lambda m: info(m, quiet)
    )
    files = report.write(out)
    if files["missing_images"]:
        info(f"note: {len(files['missing_images'])} images of audit.png have moved or gone since extraction", quiet)
    if json_out:
        info(summary_line(report, files), quiet)
        emit_json({**report.to_dict(), "files": {"json": files["json"], "png": files["png"]}})
        return
    print_findings(report, top)
    typer.echo(summary_line(report, files))


def summary_line(report, files: dict) -> str:
    return (
        f"{report.n_images} images: {len(report.label_issues)} likely label errors, "
        f"{len(report.exact_duplicates)} exact and {len(report.near_duplicates)} near duplicate sets, "
        f"{len(report.outliers)} outliers, {len(report.failed)} unreadable; {report.settings['seconds']:.1f} s. "
        f"Wrote {files['json']} and {files['png']}; `tlx fit-head --exclude {files['json']}` leaves out "
        f"{len(report.exclude)} images."
    )


def findings_rows(report, top: int) -> list[list[str]]:
    """The table: one row per finding, the kinds in order of harm, each ranked by its score."""
    rows: list[list[str]] = []
    for f in report.failed[:top]:
        rows.append(["unreadable", "-", f["path"], f["reason"]])
    for i in report.label_issues[:top]:
        rows.append(["label error", f"{i['score']:.2f}", i["path"], f"given {i['given']}, likely {i['suggested']}"])
    for group, match in ((report.exact_duplicates, "exact"), (report.near_duplicates, "near")):
        for d in group[:top]:
            detail = f"{d['kind']}: " + ", ".join(
                f"{s or '-'}/{c}" for s, c in zip(d["splits"], d["labels"], strict=True)
            )
            rows.append([f"{match} duplicate", f"{d['score']:.2f}", " = ".join(d["paths"]), detail])
    for o in report.outliers[:top]:
        rows.append(
            [
                "outlier",
                f"{o['score']:.1f}",
                o["path"],
                f"{o['label']}, neighbour similarity {o['neighbor_similarity']:.2f}",
            ]
        )
    return rows


def print_findings(report, top: int) -> None:
    from .heads import print_table

    rows = findings_rows(report, top)
    if rows:
        print_table(["finding", "score", "path", "detail"], rows, title=f"audit of {report.cache}", right={"score"})
    else:
        typer.echo(f"no findings in {report.cache}")
    for split, counts in report.counts.items():
        most, least = max(counts.values()), min(counts.values())
        ratio = f"{most / least:.1f}x" if least else "a class has none"
        typer.echo(f"{split}: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + f" (largest/smallest {ratio})")
