"""``tlx cache``: maintenance of feature caches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, handle_errors, info, report

cache_app = typer.Typer(help="Maintain feature caches (see `tlx info` to list them).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


@cache_app.command("compact")
@handle_errors
def compact_command(
    cache: Annotated[
        Path | None,
        typer.Argument(
            help="A cache file, or a folder whose caches are all compacted [default: $TLX_CACHE_DIR or ./cache]."
        ),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Merge a cache's parts into one, dropping the rows of removed images (h5py only, no torch)."""
    from ..cache.compact import compact
    from ..cache.store import default_cache_dir, list_caches, not_a_cache
    from ..errors import CacheError

    where = cache if cache is not None else default_cache_dir()
    if not where.exists():
        raise CacheError(f"{where} does not exist: pass a cache file or folder, or run `tlx extract DATA` first")
    if where.is_file() and not_a_cache(where):
        raise CacheError(not_a_cache(where))  # a part or a foreign file: say what it is, touch nothing
    paths = list_caches(where)
    if not paths:
        raise CacheError(f"no feature caches in {where}: run `tlx extract DATA` first")
    results = [compact(p, on_wait=lambda m: info(m, quiet)) for p in paths]
    lines = [
        f"{r.path}: {r.n_images} images, {r.parts_before} part(s) -> {r.parts_after}, "
        f"{r.bytes_before / 1e6:.1f} MB -> {r.bytes_after / 1e6:.1f} MB; {r.seconds:.1f} s"
        for r in results
    ]
    report("\n".join(lines), {"caches": [r.to_dict() for r in results]}, json_out, quiet)
