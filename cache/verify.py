"""``tlx cache verify``: is every byte of a cache still the one tlx wrote?

Each part (feature parts and view parts) is opened and every chunk of every dataset is read:
HDF5 checks each chunk's fletcher32 checksum on the way, so a flipped byte fails the read, and a
file cut short fails to open or to read. The part's content hashes must be the ones the index
expects at the rows it maps onto the part, and the index's own arrays must agree in length.
Parts written by a tlx older than the checksums are reported as having none: their bytes can
be read, but not checked.

``extract`` uses :func:`check_part` too: a part the index names that fails it is left out of
the sources of the next index, so its images are read and their vectors computed again, and
nothing else is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .h5format import READABLE_FORMATS, UnreadableCacheError, decode_strings, open_h5, parts_dir, views_dir
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
    """``(status, detail, rows)`` of one part file: every chunk of every dataset read (checksums
    checked by HDF5); ``hashes``: ``(part row, content hash the index expects there)`` pairs."""
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
            if hashes:
                stored = decode_strings(f["content_sha256"])
                wrong = [r for r, h in hashes if r >= rows or stored[r] != h]
                if wrong:
                    return DAMAGED, f"{len(wrong)} of its rows hold other content than the index says", rows
            checked = all(f[name].fletcher32 for name in names)
    except OSError as exc:  # a bad checksum, a short file, a damaged header
        return DAMAGED, _first_line(exc), 0
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
                status, detail, rows = check_part(path)
                report.parts.append(PartCheck(path.name, status, detail, rows))
                return report
            _check_index(f, report, len(index.paths))
            view_names = decode_strings(f["views/parts/names"]) if "views" in f else []
    except UnreadableCacheError as exc:
        report.problems.append(exc.reason)
        return report
    except OSError as exc:
        report.problems.append(f"{path} cannot be read as HDF5 ({_first_line(exc)})")
        return report
    for name, expected in _expected_hashes(index.part_names, index.source_part, index.source_row, index.hashes):
        _add(report, parts_dir(path) / name, expected)
    if index.views is not None:
        table = index.views
        number = {n: k for k, n in enumerate(view_names)}
        image_hashes = [index.hashes[i] for i in table.image.tolist()]
        source = np.array([number[p] for p in table.part], dtype=np.int64)
        for name, expected in _expected_hashes(view_names, source, table.part_row, image_hashes):
            _add(report, views_dir(path) / name, expected)
    return report


def _add(report: CacheCheck, part: Path, expected: list[tuple[int, str]]) -> None:
    status, detail, rows = check_part(part, expected)
    report.parts.append(PartCheck(f"{part.parent.name}/{part.name}", status, detail, rows))


def _expected_hashes(names, source_part, source_row, hashes):
    """``(part name, [(part row, hash)])`` for every part named."""
    expected: list[list[tuple[int, str]]] = [[] for _ in names]
    for p, r, h in zip(np.asarray(source_part).tolist(), np.asarray(source_row).tolist(), hashes, strict=True):
        expected[p].append((r, h))
    return zip(names, expected, strict=True)


def _check_index(f, report: CacheCheck, n: int) -> None:
    """The index's arrays agree with one another and with ``n_images``."""
    lengths = {name: len(f[name]) for name in ("labels", "paths", "split", "content_sha256", "source/part")}
    lengths["n_images"] = int(f.attrs.get("n_images", -1))
    if set(lengths.values()) != {n}:
        report.problems.append(f"the index's arrays disagree in length: {lengths}")
    parts = len(f["parts/names"])
    source = f["source/part"][()]
    if len(source) and (int(source.min()) < 0 or int(source.max()) >= parts):
        report.problems.append("the index maps rows onto parts it does not name")
