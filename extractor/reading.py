"""Reading image files once: the DataLoader worker reads a file's bytes, hashes them and decodes
those same bytes, so the hash recorded for a vector is the hash of the pixels it came from (a
file rewritten between a hash and a decode can no longer pair new pixels with old bytes), and
each image costs one read instead of two."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from tlx.extractor.decode import ImageDecodeError, load_image
from tlx.extractor.preprocess import ResizeCrop
from tlx.extractor.statindex import NOT_FOUND, Stat, read_and_hash

# What a worker returns beside the image: (sha256 or "", stat or None)
Meta = tuple[str, Stat | None]


class HashedImageFiles(Dataset):
    """Index -> (index, uint8 image or None, failure reason or '', (sha256, stat)).

    A file whose bytes hash to a vector the cache already has (``known``: a renamed, copied or
    touched file) is not decoded: it comes back with no image and no reason. A file whose bytes
    already failed (``known_failed``) comes back with that reason, without decoding."""

    def __init__(
        self,
        paths: Sequence[str],
        resize_crop: ResizeCrop,
        known: frozenset[str] = frozenset(),
        known_failed: Mapping[str, str] | None = None,
    ):
        self.paths = list(paths)
        self.resize_crop = resize_crop
        self.known = known
        self.known_failed = dict(known_failed or {})

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            data, digest, st = read_and_hash(self.paths[i])
        except FileNotFoundError:
            return i, None, NOT_FOUND, ("", None)
        except IsADirectoryError:
            return i, None, "is a folder", ("", None)
        except OSError as exc:
            return i, None, f"cannot read: {exc.strerror or exc}", ("", None)
        if digest in self.known:
            return i, None, "", (digest, st)
        if digest in self.known_failed:
            return i, None, self.known_failed[digest], (digest, st)
        try:
            size = 2 * self.resize_crop.resize_size  # as ResizeCrop.load: JPEG draft at twice the target
            return i, self.resize_crop(load_image(io.BytesIO(data), min_size=size)), "", (digest, st)
        except ImageDecodeError as exc:
            return i, None, str(exc), (digest, st)
        except Exception as exc:  # a decoder bug must not stop the other images
            return i, None, f"cannot decode: {type(exc).__name__}: {exc}", (digest, st)


def collate_hashed(batch):
    """Like ``collate_skipping_failures``, plus ``{index: (sha256, stat)}`` of every item; known
    items are in neither the images nor the failures."""
    ok = [(i, x) for i, x, _, _ in batch if x is not None]
    failures = [(i, reason) for i, x, reason, _ in batch if x is None and reason]
    images = torch.stack([x for _, x in ok]) if ok else torch.empty(0, dtype=torch.uint8)
    return [i for i, _ in ok], images, failures, {i: meta for i, _, _, meta in batch}
