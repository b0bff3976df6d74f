"""Reading image files once: a DataLoader worker hashes a file's bytes and decodes those same
bytes, so a vector's recorded hash is that of its pixels (a file rewritten in between cannot pair
new pixels with old bytes), and each image costs one read instead of two."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import torch

from ..cache.statindex import NOT_FOUND, read_and_hash
from .decode import ImageDecodeError, load_image
from .discovery import not_regular
from .engine import ImageFiles
from .preprocess import ResizeCrop

NO_VIEWS: tuple[list[int], None] = ([], None)


class ViewRequest:
    """The views a run must make: views 1..``count`` of every image it decodes, except those
    ``have`` already holds (sha256 -> bit mask, bit v for view v). ``make`` is a ``ViewMaker``."""

    def __init__(self, make, count: int, have: Mapping[str, int]):
        self.make, self.count, self.have = make, count, dict(have)

    def missing(self, digest: str) -> list[int]:
        mask = self.have.get(digest, 0)
        return [v for v in range(1, self.count + 1) if not (mask >> v) & 1]


class HashedImageFiles(ImageFiles):
    """Index -> (index, uint8 image or None, failure reason or '', (sha256, stat), (view indices, views)).
    Bytes the cache knows (``known``: a renamed, copied or touched file) are not decoded (no image,
    no reason) unless views of them are missing; bytes that failed before (``known_failed``) get
    that reason without decoding. An image is decoded once for its center crop and its views."""

    def __init__(
        self,
        paths: Sequence[str],
        resize_crop: ResizeCrop,
        known: frozenset[str] = frozenset(),
        known_failed: Mapping[str, str] | None = None,
        views: ViewRequest | None = None,
    ):
        super().__init__(paths, resize_crop)
        self.known, self.known_failed, self.views = known, dict(known_failed or {}), views

    def __getitem__(self, i: int):
        why = not_regular(self.paths[i])
        if why:  # a FIFO would block the worker forever
            return i, None, why, ("", None), NO_VIEWS
        try:
            data, digest, st = read_and_hash(self.paths[i])
        except OSError as exc:
            reasons = {FileNotFoundError: NOT_FOUND, IsADirectoryError: "is a folder"}
            return i, None, reasons.get(type(exc), f"cannot read: {exc.strerror or exc}"), ("", None), NO_VIEWS
        if digest in self.known_failed:
            return i, None, self.known_failed[digest], (digest, st), NO_VIEWS
        wanted = self.views.missing(digest) if self.views is not None else []
        known = digest in self.known
        if known and not wanted:
            return i, None, "", (digest, st), NO_VIEWS
        try:
            size = 2 * self.resize_crop.resize_size  # as ResizeCrop.load: JPEG draft at twice the target
            img = load_image(io.BytesIO(data), min_size=size)
            center = self.resize_crop(img)
            views = self.views.make(img, digest, wanted, center) if self.views is not None and wanted else None
            return i, None if known else center, "", (digest, st), (wanted, views)
        except ImageDecodeError as exc:
            return i, None, str(exc), (digest, st), NO_VIEWS
        except Exception as exc:  # a decoder bug must not stop the other images
            return i, None, f"cannot decode: {type(exc).__name__}: {exc}", (digest, st), NO_VIEWS


def collate_hashed(batch):
    """Like ``collate_skipping_failures``, plus ``{index: (sha256, stat)}`` of every item and the
    views: ``([(index, view), ...], uint8 (m, 3, S, S))``. Known items are in neither the images
    nor the failures; a known item decoded for its views has views but no image."""
    ok = [(i, x) for i, x, _, _, _ in batch if x is not None]
    failures = [(i, reason) for i, x, reason, _, _ in batch if x is None and reason]
    images = torch.stack([x for _, x in ok]) if ok else torch.empty(0, dtype=torch.uint8)
    keys = [(i, v) for i, _, _, _, (wanted, _) in batch for v in wanted]
    made = [views for _, _, _, _, (_, views) in batch if views is not None]
    view_images = torch.cat(made) if made else torch.empty(0, dtype=torch.uint8)
    return [i for i, _ in ok], images, failures, {i: meta for i, _, _, meta, _ in batch}, (keys, view_images)
