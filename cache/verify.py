"""``tlx cache verify``: every chunk of every part is read (HDF5 checks its fletcher32 checksum)
and each part's content hashes must be the ones the index expects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .h5format import READABLE_FORMATS, UnreadableCacheError, decode_strings, first_line, open_h5, parts_dir, views_dir
from .index import index_of

OK, DAMAGED, MISSING, NO_CHECKSUM = "ok", "damaged", "missing", "no checksum (written by an older tlx)"
BLOCK_BYTES = 16 << 20  # read this much per step: memory stays flat whatever the part's size


@dataclass
class PartCheck:
    part: str  # relative to the cache's folder: ``<cache>.h5.parts/<name>``
    status: str  # OK, DAMAGED, MISSING or NO_CHECKSUM
    detail: str = ""
    rows: int = 0


@dataclass
class CacheCheck:
    cache: str
    parts: list[PartCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the index's own inconsistencies

    @property
    def damaged(self) -> bool:
        return bool(self.problems) or any(p.status in (DAMAGED, MISSING) for p in self.parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "damaged": self.damaged}


def check_part(path: Path, hashes: list[tuple[int, str]] | None = None) -> tuple[str, str, int]:
    """``(status, detail, rows)`` of one part file, every chunk of every dataset read;
    ``hashes``: ``(part row, content hash the index expects there)`` pairs."""
    if not path.is_file():
        return MISSING, "the file is not there", 0
    try:
        with open_h5(path) as f:
            if "features" not in f or "content_sha256" not in f:
                return DAMAGED, "it has no features or no content hashes", 0
            names = [n for n, obj in f.items() if isinstance(obj, h5py.Dataset)]
            for name in names:
                _read_all(f[name])
            rows = len(f["content_sha256"])
            if f["features"].shape[0] != rows:
                return DAMAGED, f"{f['features'].shape[0]} vectors but {rows} content hashes", rows
            stored = decode_strings(f["content_sha256"]) if hashes else []
            wrong = [r for r, h in hashes or [] if r >= rows or stored[r] != h]
            if wrong:
                return DAMAGED, f"{len(wrong)} of its rows hold other content than the index says", rows
            checked = all(f[name].fletcher32 for name in names)
    except OSError as exc:  # a bad checksum, a short file, a damaged header
        return DAMAGED, first_line(exc), 0
    return (OK if checked else NO_CHECKSUM), "", rows


def _read_all(ds) -> None:
    if ds.shape == () or not ds.size:
        ds[()]
        return
    row_bytes = max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, BLOCK_BYTES // row_bytes)
    if ds.chunks:
        step = max(ds.chunks[0], step - step % ds.chunks[0])
    for start in range(0, ds.shape[0], step):
        ds[start : start + step]


def expected_hashes(sources: list[tuple[str, int]], hashes: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Part name -> the ``(part row, content hash)`` pairs the index expects there, by name."""
    expected: dict[str, list[tuple[int, str]]] = {}
    for (name, row), h in zip(sources, hashes, strict=True):
        expected.setdefault(name, []).append((row, h))
    return dict(sorted(expected.items()))


def damaged_parts(folder: Path, expected: Mapping[str, list[tuple[int, str]] | None]) -> dict[str, str]:
    """{name: why} of the parts in ``folder`` (name -> expected hashes) that fail :func:`check_part`."""
    checks = {name: check_part(folder / name, hashes) for name, hashes in expected.items()}
    return {name: why for name, (status, why, _) in checks.items() if status in (DAMAGED, MISSING)}


def verify_cache(path: Path) -> CacheCheck:
    """Check a whole cache: its index, and every part the index names, chunk by chunk."""
    report = CacheCheck(str(path))
    try:
        with open_h5(path) as f:
            if f.attrs.get("tlx_format") not in READABLE_FORMATS:
                report.problems.append(f"{path} is not a tlx feature cache")
                return report
            index = index_of(f, path)
            if index.format < 2:
                report.parts.append(PartCheck(path.name, *check_part(path)))
                return report
            lengths = {name: len(f[name]) for name in ("labels", "paths", "split", "content_sha256", "source/part")}
            lengths["n_images"] = int(f.attrs.get("n_images", -1))
            if set(lengths.values()) != {len(index.paths)}:
                report.problems.append(f"the index's arrays disagree in length: {lengths}")
            source = index.source_part
            if len(source) and (int(source.min()) < 0 or int(source.max()) >= len(index.part_names)):
                report.problems.append("the index maps rows onto parts it does not name")
                return report
    except UnreadableCacheError as exc:
        report.problems.append(exc.reason)
        return report
    except OSError as exc:
        report.problems.append(f"{path} cannot be read as HDF5 ({first_line(exc)})")
        return report
    tables = [(parts_dir(path), index.sources(), index.hashes)]
    if (views := index.views) is not None:
        image_hashes = [index.hashes[i] for i in views.image.tolist()]
        tables.append((views_dir(path), list(zip(views.part, views.part_row.tolist(), strict=True)), image_hashes))
    for folder, sources, hashes in tables:
        for name, expected in expected_hashes(sources, hashes).items():
            report.parts.append(PartCheck(f"{folder.name}/{name}", *check_part(folder / name, expected)))
    return report
