"""``tlx info``: what caches exist, and which backbones are known."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..cache.space import pool_label
from .cache import find_caches
from .common import JsonOpt, emit_json, handle_errors, info, print_table
from .heads import heads_command

COLUMNS = ["file", "dataset", "backbone", "pool", "images", "width", "failed", "updated"]


@handle_errors
def info_command(
    cache: Annotated[
        Path | None, typer.Argument(help="A cache file or a folder of caches [default: $TLX_CACHE_DIR or ./tlx-cache].")
    ] = None,
    backbones: Annotated[bool, typer.Option("--backbones", help="List the registered backbones instead.")] = False,
    heads: Annotated[
        bool, typer.Option("--heads", help="List the heads with their parameters instead (as `tlx heads`).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List feature caches: dataset, backbone, image count, width, failures, date."""
    if heads:
        heads_command(json_out)
        return
    if backbones:
        print_backbones(json_out)
        return
    from ..cache.reader import read_summary
    from ..errors import CacheError

    where, paths = find_caches(cache, required=False)
    rows = []
    for path in paths:
        try:
            rows.append(read_summary(path))
        except CacheError as exc:
            if where.is_file():
                raise  # the user named this file: it is an error, not a row to skip
            info(f"warning: skipped {getattr(exc, 'reason', exc)}")
    if json_out:
        emit_json(rows)
        return
    if not rows:
        typer.echo(f"no feature caches in {where}")
        return
    print_table(COLUMNS, [_cells(r) for r in rows])
    if where.is_file() and rows[0]["failed"]:
        typer.echo(f"{rows[0]['n_failed']} image(s) could not be read (not in the cache):")
        for failure in rows[0]["failed"]:
            typer.echo(f"  {failure['path']}: {failure['reason']}")


def print_backbones(json_out: bool) -> None:
    from ..extractor.registry import list_backbones, weights_status

    names, status = list_backbones(), weights_status()
    if json_out:
        emit_json({n: {"description": d, "weights": status.get(n, "")} for n, d in names.items()})
        return
    for name, desc in names.items():
        typer.echo(f"{name:<28} {desc}")
        typer.echo(f"{'':<28}   weights: {status.get(name) or 'unknown'}")


def _cells(r: dict) -> list[str]:
    return [
        Path(r["path"]).name,
        str(r["dataset"]),
        str(r["backbone"]),
        pool_label(r["pooling"], r["stages"]),
        str(r["n_images"]) + (f" x{1 + r['views']} ({r['view_recipe']} views)" if r.get("views") else ""),
        str(r["feature_dim"]),
        str(r["n_failed"]),
        str(r["updated"]),
    ]
