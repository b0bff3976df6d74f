"""Where tlx may write: an ``--out`` never replaces an input (a photo, a file of a run, a feature cache)
and never puts a run inside another run. Files are known by tlx's markers and by their signatures."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import TlxError

# Signatures of the image formats tlx reads: JPEG, PNG, GIF, TIFF (both byte orders), BMP; and of HDF5.
_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".dib")
# What the cache writes beside an index ``NAME.h5`` (cache/h5format.py, cache/parts.py).
CACHE_SUFFIXES = (".h5", ".h5.lock", ".h5.journal", ".h5.parts", ".h5.views", ".h5.stat")
RUN_RECORDS = ("head.json", "finetune.json")  # what heads/io.py and finetune/report.py write beside metrics
RUN_KINDS = ("head", "finetune")


class OutputError(TlxError):
    """An ``--out`` that would overwrite an input, a run's file or a feature cache."""


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def is_image(path: Path) -> bool:
    """An image by its name or by its first bytes (a photo renamed ``x.csv`` is still one)."""
    head = _head(path)
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return path.suffix.lower() in IMAGE_SUFFIXES or head.startswith(_IMAGE_SIGNATURES) or webp


def is_run_folder(folder: Path, damaged: bool = True) -> bool:
    """tlx's markers of a run: a ``metrics.json`` of a known kind beside its run record, or checkpoints.
    ``damaged``: an unreadable ``metrics.json`` counts too (could writing there destroy a run?)."""
    if any((folder / "checkpoints" / name).is_file() for name in ("last.pt", "best.pt")):
        return True
    if not any((folder / name).is_file() for name in RUN_RECORDS):
        return False
    metrics = folder / "metrics.json"
    try:
        record = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return damaged and metrics.is_file()
    return isinstance(record, dict) and record.get("kind") in RUN_KINDS


def enclosing_run(path: Path) -> Path | None:
    """The run folder that holds ``path`` (``path`` itself when it is one), if any."""
    return next((f for f in [path, *path.parents] if f.is_dir() and is_run_folder(f)), None)


def enclosing_cache(path: Path) -> Path | None:
    """The cache folder (``NAME.h5.parts`` and its siblings) that holds ``path``, if any."""
    return next((f for f in [path, *path.parents] if f.name.endswith(CACHE_SUFFIXES) and f.is_dir()), None)


def check_output_file(out: Path, option: str, may_replace: Callable[[Path], bool]) -> None:
    """Refuse ``out`` when writing it would destroy something: an image, a cache file, a file of a
    run or any other existing file but the caller's own earlier output (``may_replace`` says)."""
    out = Path(out)
    real = out.resolve()
    fix = "choose a new file name"
    cache = enclosing_cache(real.parent)
    if cache is not None or real.name.endswith(CACHE_SUFFIXES):
        raise OutputError(f"{option} {out} is inside the feature cache {cache or real}: {fix} outside it")
    if not os.path.lexists(out):
        return
    try:
        st = os.stat(out)
    except OSError as exc:
        raise OutputError(f"{option} {out} cannot be checked ({exc.strerror}): {fix}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{option} {out} is a folder: give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{option} {out} exists and is not a regular file (a FIFO or a device): {fix}")
    if is_image(real):
        raise OutputError(f"{option} {out} is an image, maybe an input (a shell glob?); it was left as it is: {fix}")
    if _head(real, len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
        raise OutputError(f"{option} {out} is an HDF5 file (a feature cache?); it was left as it is: {fix}")
    if may_replace(real):
        return
    run = enclosing_run(real.parent)
    if run is not None:
        raise OutputError(f"{option} {out} is a file of the run {run}; it was left as it is: {fix} outside the run")
    raise OutputError(
        f"{option} {out} already exists and is not a file this command wrote; it was left as it is: "
        f"{fix} or remove it first"
    )


def check_output_folder(out: Path) -> None:
    """Refuse a run folder ``out`` inside another run or a feature cache."""
    real = Path(out).resolve()
    cache = enclosing_cache(real)
    if cache is not None:
        raise OutputError(f"--out {out} is inside the feature cache {cache}: choose a folder outside it")
    run = enclosing_run(real)
    if run is not None:
        where = "is" if run == real else "is inside"
        raise OutputError(
            f"--out {out} {where} the run {run}: a run is never written into another; choose a new folder"
        )
