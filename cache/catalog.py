"""Finding caches: their file names, the caches of a folder, and the one a command uses."""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime
from pathlib import Path

from ..errors import CacheError
from .h5format import READABLE_FORMATS, read_attrs
from .space import FeatureSpace


def default_cache_dir() -> Path:
    return Path(os.environ.get("TLX_CACHE_DIR", "tlx-cache"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "data"


def cache_file_prefix(dataset_name: str, backbone: str, pooling: str) -> str:
    """The part of a cache's file name known before the network is built."""
    return f"{_slug(dataset_name)}-{_slug(backbone)}-{pooling}-"


def cache_file_name(dataset_name: str, dataset_root: str, space: FeatureSpace) -> str:
    ident = hashlib.sha256(f"{space.key}|{dataset_root}".encode()).hexdigest()[:10]
    return f"{cache_file_prefix(dataset_name, space.backbone, space.pool_label)}{ident}.h5"


def scan_caches(where: Path) -> list[tuple[Path, dict | None]]:
    """The caches under a folder (or the file itself) and their attributes, newest first by their
    recorded ``updated`` time; one HDF5 cannot open (None) comes last, for its reader to report."""
    if where.is_file():
        return [(where, None)]
    found: list[tuple[float, float, Path, dict | None]] = []
    for p in where.glob("*.h5") if where.is_dir() else []:
        if p.name.startswith(".") or not p.is_file():
            continue
        try:
            attrs = read_attrs(p)
        except (OSError, ValueError):
            found.append((0.0, p.stat().st_mtime, p, None))
            continue
        if attrs.get("tlx_format") not in READABLE_FORMATS:
            continue
        try:
            updated = datetime.strptime(str(attrs.get("updated", "")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            updated = 0.0
        found.append((updated, p.stat().st_mtime, p, attrs))
    return [(p, attrs) for _, _, p, attrs in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


def list_caches(where: Path) -> list[Path]:
    return [p for p, _ in scan_caches(where)]


def pick_cache(where: Path) -> Path:
    """The cache a command without ``--features`` uses: the newest of the folder's one dataset;
    with several, the one named like the current working folder, else a refusal listing them."""
    caches = scan_caches(where)
    if not caches:
        raise CacheError(f"no feature cache found at {where}: run `tlx extract DATA` first, or pass --features FILE")
    datasets: dict[str, list[Path]] = {}
    for p, attrs in caches:
        datasets.setdefault(str((attrs or {}).get("dataset_name", "")), []).append(p)
    if len(datasets) == 1:
        return caches[0][0]
    here = Path.cwd().name
    if here in datasets:
        return datasets[here][0]
    listed = "; ".join(f"{name or '?'}: {', '.join(p.name for p in ps)}" for name, ps in sorted(datasets.items()))
    raise CacheError(f"{where} holds caches of {len(datasets)} datasets ({listed}): pass --features FILE to say which")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
