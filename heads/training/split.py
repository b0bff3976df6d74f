"""Which cached images train a head, which validate it and which test it: the data's own split
when it has one, otherwise a seeded draw per image from sha256(seed, its content hash), so that an
image's side depends on its content and the seed alone (other images added, removed or renamed
never move it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ...errors import DatasetError


def split_indices(
    paths: list[str],
    labels: np.ndarray,
    split: list[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    hashes: Sequence[str | None],
    classes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train_idx, val_idx, info)``: sorted row indices and how the split was made. ``hashes``
    are the rows' content sha256 (rows without one draw from their path); ``classes`` name the
    labels in error messages."""
    labels = np.asarray(labels)
    n = len(labels)
    if len(paths) != n or len(split) != n or len(hashes) != n:
        raise ValueError(
            f"paths ({len(paths)}), labels ({n}), split ({len(split)}) and hashes ({len(hashes)}) "
            "must have one entry per row"
        )
    split = list(split)
    if "train" in split and "val" in split:
        tags = np.asarray(split, dtype=object)
        return np.flatnonzero(tags == "train"), np.flatnonzero(tags == "val"), {"source": "data"}

    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction:g}")
    usable = np.array([s != "test" for s in split], dtype=bool)
    draws = np.array([_draw(seed, hashes[i] or "", paths[i]) for i in range(n)], dtype=np.float64)
    in_val = usable & (draws < val_fraction)
    for label in np.unique(labels[usable]):
        members = np.flatnonzero(usable & (labels == label))
        if len(members) < 2:
            name = classes[int(label)] if classes is not None else int(label)
            raise DatasetError(
                f"class {name!r} has {len(members)} image: a train/validation split needs at least 2 per class; "
                "add images of that class or remove it from the data"
            )
        # Ties (the same content twice) are broken by path, so the order is still a function of the set.
        ranked = members[np.lexsort((np.array([paths[i] for i in members]), draws[members]))]
        if not in_val[members].any():
            in_val[ranked[0]] = True
        elif in_val[members].all():
            in_val[ranked[-1]] = False
    train, val = np.flatnonzero(usable & ~in_val), np.flatnonzero(in_val)
    return train, val, {"source": "seeded", "val_fraction": val_fraction, "seed": int(seed)}


def _draw(seed: int, content_hash: str, path: str) -> float:
    """A number in [0, 1) that depends on the seed and the image alone."""
    key = f"{int(seed)}:{content_hash}" if content_hash else f"{int(seed)}:path:{path}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
