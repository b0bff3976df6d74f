"""``tlx info``: what caches exist, and which backbones are known."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, emit_json, handle_errors, info

COLUMNS = ("file", "dataset", "backbone", "pool", "images", "width", "failed", "updated")


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)


@handle_errors
def info_command(
    cache: Annotated[
        Path | None, typer.Argument(help="A cache file or a folder of caches [default: $TLX_CACHE_DIR or ./cache].")
    ] = None,
    backbones: Annotated[bool, typer.Option("--backbones", help="List the registered backbones instead.")] = False,
    heads: Annotated[
        bool, typer.Option("--heads", help="List the heads with their parameters instead (as `tlx heads`).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List feature caches: dataset, backbone, image count, width, failures, date."""
    if heads:
        from .heads import print_heads

        print_heads(json_out)
        return
    if backbones:
        from ..extractor.registry import list_backbones, weights_status

        names, status = list_backbones(), weights_status()
        if json_out:
            emit_json({n: {"description": d, "weights": status.get(n, "")} for n, d in names.items()})
        else:
            for name, desc in names.items():
                typer.echo(f"{name:<28} {desc}")
                typer.echo(f"{'':<28}   weights: {status.get(name) or 'unknown'}")
        return
    from ..cache.catalog import default_cache_dir, list_caches
    from ..cache.h5format import not_a_cache
    from ..cache.reader import read_summary
    from ..errors import CacheError

    where = cache if cache is not None else default_cache_dir()
    if not where.exists():
        raise CacheError(f"{where} does not exist: pass a cache file or folder, or run `tlx extract DATA` first")
    if where.is_file() and not_a_cache(where):
        raise CacheError(not_a_cache(where))  # a part or a foreign file: say what it is, touch nothing
    rows = []
    for path in list_caches(where):
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
    _print_table([_cells(r) for r in rows])
    if where.is_file():
        _print_failures(rows[0])


def _cells(r: dict) -> list[str]:
    return [
        Path(r["path"]).name,
        str(r["dataset"]),
        str(r["backbone"]),
        str(r["pooling"]) + (f"-s{r['stages']}" if r.get("stages") else ""),
        str(r["n_images"]) + (f" x{1 + r['views']} ({r['view_recipe']} views)" if r.get("views") else ""),
        str(r["feature_dim"]),
        str(r["n_failed"]),
        str(r["updated"]),
    ]


def _print_table(cells: list[list[str]]) -> None:
    """A rich table on a terminal; piped, plain aligned rows that are never cut or wrapped."""
    if not sys.stdout.isatty():
        widths = [max(len(row[i]) for row in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
        for row in [list(COLUMNS), *cells]:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS)
    for column in table.columns:
        column.overflow = "fold"  # a long file name folds onto a second line instead of losing its end
    for row in cells:
        table.add_row(*row)
    Console().print(table)


def _print_failures(row: dict) -> None:
    if not row["failed"]:
        return
    typer.echo(f"{row['n_failed']} image(s) could not be read (not in the cache):")
    for failure in row["failed"]:
        typer.echo(f"  {failure['path']}: {failure['reason']}")
