"""The images to predict, and each file's content hash (the key of the run's cache)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..cache.statindex import read_error
from ..common.hashing import sha256_file
from ..errors import DatasetError
from ..extractor.discovery import IMAGE_EXTENSIONS, not_regular, walk_images


def expand_folders(inputs: Iterable) -> list[Path]:
    """Folders replaced by their images (recursively, with the extract rules), files kept as given."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        out.extend(walk_images(p) if p.is_dir() else [p])
    return out


def collect_images(inputs: Iterable) -> list[Path]:
    """Image files from files and folders, each once. A file named explicitly is always taken, so a
    mislabelled one is reported rather than silently dropped."""
    inputs = list(inputs)
    if not inputs:
        raise DatasetError("no images given: pass image files or folders to predict")
    for item in inputs:
        p = Path(item).expanduser()
        if not (p.exists() or p.is_symlink()):
            raise DatasetError(f"{p} does not exist: pass image files or folders of images")
    found: dict[str, Path] = {}
    for f in expand_folders(inputs):
        found.setdefault(os.path.normcase(os.path.abspath(f)), f)
    if not found:
        shown = ", ".join(str(i) for i in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
        raise DatasetError(f"no images found in {shown} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return list(found.values())


def hash_images(paths: Sequence[Path]) -> tuple[list[str | None], dict[int, str]]:
    """Each file's sha256 (None for a file that cannot be read), and why those failed."""
    hashes: list[str | None] = []
    failed: dict[int, str] = {}
    for i, p in enumerate(paths):
        digest: str | None = None
        why = not_regular(p)  # a FIFO named on the command line would block the read forever
        if not why:
            try:
                digest = sha256_file(p)
            except OSError as exc:
                why = read_error(exc)
        hashes.append(digest)
        if why:
            failed[i] = why
    return hashes, failed
