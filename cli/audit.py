"""``tlx audit``: the data set's own mistakes from its feature cache (``tlx.audit``, imported inside
the command with numpy, the linear head and cleanlab when installed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, handle_errors, info, print_table, report

HELP = {
    "features": "Feature cache written by `tlx extract`, or a folder of caches "
    "[default: the most recent cache in $TLX_CACHE_DIR or ./tlx-cache].",
    "out": "Folder to write audit.json and audit.png into.",
    "near_threshold": "Cosine similarity of the centered features above which two images are near duplicates "
    "(0.80 calibrated on ants/bees: JPEG q70 0.8x copies scored 0.85-0.95, distinct photos at most 0.70).",
    "neighbors": "Nearest neighbours per image for the label vote and the outlier score.",
    "views": "Also score each held-out image on its augmented views (caches with --views K).",
    "top": "Findings of each kind shown in the table (all are in audit.json).",
}


@handle_errors
def audit_command(
    features: Annotated[Path | None, typer.Option(help=HELP["features"])] = None,
    out: Annotated[Path, typer.Option(help=HELP["out"], file_okay=False)] = Path("."),
    near_threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help=HELP["near_threshold"])] = 0.80,
    neighbors: Annotated[int, typer.Option(min=1, help=HELP["neighbors"])] = 10,
    views: Annotated[bool, typer.Option(help=HELP["views"])] = True,
    top: Annotated[int, typer.Option(min=0, help=HELP["top"])] = 10,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Find duplicates (exact and near; within a class, across classes, across splits), likely label
    errors, outliers and undecodable images, and count the classes per split, from the cache alone.
    Writes audit.json (every finding) and audit.png; `fit-head --exclude audit.json` fits without them."""
    from ..quality import audit

    found = audit(
        features, near_threshold=near_threshold, neighbors=neighbors, views=views, log=lambda m: info(m, quiet)
    )
    files = found.write(out)
    if files["missing_images"]:
        info(f"note: {len(files['missing_images'])} images of audit.png have moved or gone since extraction", quiet)
    if not json_out:
        print_findings(found, top)
    result = {**found.to_dict(), "files": {"json": files["json"], "png": files["png"]}}
    report(summary_line(found, files), result, json_out, quiet)


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
            where = ", ".join(f"{s or '-'}/{c}" for s, c in zip(d["splits"], d["labels"], strict=True))
            rows.append([f"{match} duplicate", f"{d['score']:.2f}", " = ".join(d["paths"]), f"{d['kind']}: {where}"])
    for o in report.outliers[:top]:
        detail = f"{o['label']}, neighbour similarity {o['neighbor_similarity']:.2f}"
        rows.append(["outlier", f"{o['score']:.1f}", o["path"], detail])
    return rows


def print_findings(report, top: int) -> None:
    rows = findings_rows(report, top)
    if rows:
        print_table(["finding", "score", "path", "detail"], rows, title=f"audit of {report.cache}", right={"score"})
    else:
        typer.echo(f"no findings in {report.cache}")
    for split, counts in report.counts.items():
        most, least = max(counts.values()), min(counts.values())
        ratio = f"{most / least:.1f}x" if least else "a class has none"
        typer.echo(f"{split}: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + f" (largest/smallest {ratio})")
