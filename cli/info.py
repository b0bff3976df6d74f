"""``tlx info``: what caches exist, and which backbones are known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tlx.cli.common import JsonOpt, emit_json, handle_errors


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)


@handle_errors
def info_command(
    cache: Annotated[
        Path | None, typer.Argument(help="A cache file or a folder of caches [default: $TLX_CACHE_DIR or ./cache].")
    ] = None,
    backbones: Annotated[bool, typer.Option("--backbones", help="List the registered backbones instead.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List feature caches: dataset, backbone, image count, width, date."""
    if backbones:
        from tlx.extractor.registry import list_backbones

        names = list_backbones()
        if json_out:
            emit_json(names)
        else:
            for name, desc in names.items():
                typer.echo(f"{name:<28} {desc}")
        return
    from tlx.errors import CacheError
    from tlx.extractor.store import default_cache_dir, list_caches, read_attrs

    where = cache if cache is not None else default_cache_dir()
    if not where.exists():
        raise CacheError(f"{where} does not exist: pass a cache file or folder, or run `tlx extract DATA` first")
    rows = []
    for path in list_caches(where):
        try:
            a = read_attrs(path)
            space = json.loads(a["feature_space"])
        except (OSError, KeyError, ValueError):
            continue  # not a tlx cache
        rows.append(
            {
                "path": str(path),
                "dataset": a.get("dataset_name"),
                "dataset_root": a.get("dataset_root"),
                "backbone": a.get("backbone"),
                "pooling": a.get("pooling"),
                "n_images": int(a.get("n_images", 0)),
                "feature_dim": int(a.get("feature_dim", 0)),
                "updated": a.get("updated"),
                "weights_sha256": space.get("weights_sha256"),
            }
        )
    if json_out:
        emit_json(rows)
        return
    if not rows:
        typer.echo(f"no feature caches in {where}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("file", "dataset", "backbone", "pool", "images", "width", "updated")
    for r in rows:
        table.add_row(
            Path(r["path"]).name,
            r["dataset"],
            r["backbone"],
            r["pooling"],
            str(r["n_images"]),
            str(r["feature_dim"]),
            r["updated"],
        )
    Console().print(table)
