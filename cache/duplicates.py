"""Copies of one photo that make a score dishonest, counted by content (sha256): ``train_val``
(both among the training and the held-out images) and ``cross_class`` (under two or more labels).
Copies inside one side only weigh a photo double: they leak nothing and are not counted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def count_duplicates(hashes: Sequence[str], labels, train, held_out) -> dict[str, int]:
    """``train``, ``held_out``: row numbers or boolean masks; rows without a hash never count."""
    hashes = list(hashes)
    in_train = {hashes[i] for i in _rows(train) if hashes[i]}
    in_held = {hashes[i] for i in _rows(held_out) if hashes[i]}
    labels_of: dict[str, set[int]] = {}
    for h, label in zip(hashes, np.asarray(labels).tolist(), strict=True):
        if h:
            labels_of.setdefault(h, set()).add(int(label))
    return {"train_val": len(in_train & in_held), "cross_class": sum(len(seen) > 1 for seen in labels_of.values())}


def split_duplicates(hashes: Sequence[str], labels, split: Sequence[str]) -> dict[str, int]:
    """The counts for the data's own split tags: "train" against "val" and "test". Data without
    a split has no train/val copies yet: the seeded split keys on content, so copies fall together."""
    tags = np.asarray(list(split), dtype=object)
    return count_duplicates(hashes, labels, tags == "train", (tags == "val") | (tags == "test"))


def duplicates_warning(counts: dict[str, int]) -> str | None:
    """One line for people, or None when there is nothing to say."""
    parts = []
    if counts.get("train_val"):
        parts.append(
            f"{counts['train_val']} image(s) are both in train and in val/test (same content): "
            "their held-out scores are scores on training photos"
        )
    if counts.get("cross_class"):
        parts.append(f"{counts['cross_class']} image(s) carry two labels (the same content in two classes)")
    return "warning: " + "; ".join(parts) + "; remove the copies to get honest scores" if parts else None


def _rows(selection) -> np.ndarray:
    arr = np.asarray(selection)
    return np.flatnonzero(arr) if arr.dtype == bool else arr.astype(np.int64).reshape(-1)
