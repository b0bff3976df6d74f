"""Copies of one photo that make a score dishonest, counted from the content hashes a cache holds.

* ``train_val``: distinct contents (sha256) that are among the training images *and* among the
  held-out ones (val or test). A head scored on such a copy is scored on a photo it was fitted on.
* ``cross_class``: distinct contents that carry two or more labels (the same bytes filed under two
  classes), wherever they are. At most one of the labels can be right.

Both count images by content, not rows: three copies of one photo in train and val count once.
Copies inside one side (twice in train) are neither: they weigh a photo double, they leak nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def count_duplicates(hashes: Sequence[str], labels, train, held_out) -> dict[str, int]:
    """``train`` and ``held_out``: row numbers (or boolean masks) of the training and held-out rows.
    Rows without a content hash (empty) are never counted."""
    hashes = list(hashes)
    label_list = np.asarray(labels).tolist()
    train_rows, held_rows = _rows(train, len(hashes)), _rows(held_out, len(hashes))
    in_train = {hashes[i] for i in train_rows if hashes[i]}
    in_held = {hashes[i] for i in held_rows if hashes[i]}
    labels_of: dict[str, set[int]] = {}
    for h, label in zip(hashes, label_list, strict=True):
        if h:
            labels_of.setdefault(h, set()).add(int(label))
    return {
        "train_val": len(in_train & in_held),
        "cross_class": sum(1 for seen in labels_of.values() if len(seen) > 1),
    }


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
    if not parts:
        return None
    return "warning: " + "; ".join(parts) + "; remove the copies to get honest scores"


def _rows(selection, n: int) -> np.ndarray:
    arr = np.asarray(selection)
    if arr.dtype == bool:
        return np.flatnonzero(arr)
    return arr.astype(np.int64).reshape(-1) if n else np.zeros(0, dtype=np.int64)
