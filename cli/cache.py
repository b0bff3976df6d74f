"""``tlx cache``: maintenance of feature caches."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, QuietOpt, handle_errors, info, report

CACHES_HELP = "A cache file, or a folder whose caches are all {} [default: $TLX_CACHE_DIR or ./tlx-cache]."
cache_app = typer.Typer(help="Maintain feature caches (see `tlx info` to list them).", no_args_is_help=True)


def find_caches(cache: Path | None, required: bool = True) -> tuple[Path, list[Path]]:
    """The folder or file asked for (None: the default folder) and the caches in it."""
    from ..cache.catalog import default_cache_dir, list_caches
    from ..cache.h5format import not_a_cache
    from ..errors import CacheError

    where = cache if cache is not None else default_cache_dir()
    if not where.exists():
        raise CacheError(f"{where} does not exist: pass a cache file or folder, or run `tlx extract DATA` first")
    if where.is_file() and not_a_cache(where):
        raise CacheError(not_a_cache(where))  # a part or a foreign file: say what it is, touch nothing
    paths = list_caches(where)
    if required and not paths:
        raise CacheError(f"no feature caches in {where}: run `tlx extract DATA` first")
    return where, paths


@cache_app.command("compact")
@handle_errors
def compact_command(
    cache: Annotated[Path | None, typer.Argument(help=CACHES_HELP.format("compacted"))] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Merge a cache's parts into one, dropping the rows of removed images (h5py only, no torch)."""
    from ..cache.compact import compact

    results = [compact(p, on_wait=lambda m: info(m, quiet)) for p in find_caches(cache)[1]]
    lines = [
        f"{r.path}: {r.n_images} images, {r.parts_before} part(s) -> {r.parts_after}, "
        f"{r.bytes_before / 1e6:.1f} MB -> {r.bytes_after / 1e6:.1f} MB; {r.seconds:.1f} s"
        for r in results
    ]
    report("\n".join(lines), {"caches": [asdict(r) for r in results]}, json_out, quiet)


@cache_app.command("verify")
@handle_errors
def verify_command(
    cache: Annotated[Path | None, typer.Argument(help=CACHES_HELP.format("checked"))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Read every chunk of every part of a cache and check it against its checksum and the index;
    exit 1 naming each damaged part (`tlx extract` re-computes exactly those rows). Changes nothing."""
    from ..cache.verify import OK, verify_cache

    checks = [verify_cache(p) for p in find_caches(cache)[1]]
    lines = []
    for check in checks:
        bad = [p for p in check.parts if p.status != OK]
        lines.append(f"{check.cache}: {'DAMAGED' if check.damaged else 'ok'}, {len(check.parts)} part(s) read")
        lines += [f"  index: {problem}" for problem in check.problems]
        lines += [f"  {p.part}: {p.status}" + (f" ({p.detail})" if p.detail else "") for p in bad]
        if check.damaged:
            hint = "re-computes the damaged parts' rows" if not check.problems else "rebuilds it"
            lines.append(f"  run `tlx extract` on its data again: it {hint}, and keeps the rest")
    report("\n".join(lines), {"caches": [c.to_dict() for c in checks]}, json_out)
    if any(c.damaged for c in checks):
        raise typer.Exit(1)
