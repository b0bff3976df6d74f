"""Which cached images train a head and which validate it.

* The data's own split when it has one (some rows "train" and some "val"): train = the
  "train" rows, val = the "val" rows; other rows ("test", unlabelled) are left out.
* Otherwise a seeded, stratified split of the remaining rows ("test" rows are never used):
  within each class, ``round(val_fraction * n)`` images (at least 1, at most n - 1) go to
  validation. It depends only on the set of (path, label) pairs, the fraction and the seed,
  not on the order of the rows, so fine-tuning and predict can reproduce it from the run.
"""

from __future__ import annotations

import numpy as np

from tlx.errors import DatasetError


def split_indices(
    paths: list[str],
    labels: np.ndarray,
    split: list[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    classes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return ``(train_idx, val_idx, info)``: sorted row indices and how the split was made.

    ``classes`` (optional) names the labels in error messages.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if len(paths) != n or len(split) != n:
        raise ValueError(f"paths ({len(paths)}), labels ({n}) and split ({len(split)}) must have one entry per row")
    split = list(split)
    if "train" in split and "val" in split:
        tags = np.asarray(split, dtype=object)
        train = np.flatnonzero(tags == "train")
        val = np.flatnonzero(tags == "val")
        return train, val, {"source": "data"}

    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction:g}")
    usable = np.array([s != "test" for s in split], dtype=bool)
    # Sort by path so that the split does not depend on the order of the rows.
    order = np.array(sorted(np.flatnonzero(usable), key=lambda i: paths[i]), dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    train_parts, val_parts = [], []
    for label in np.unique(labels[order]):
        members = order[labels[order] == label]
        if len(members) < 2:
            name = classes[int(label)] if classes is not None else label
            raise DatasetError(
                f"class {name!r} has {len(members)} image: a train/validation split needs at least 2 per class; "
                "add images of that class or remove it from the data"
            )
        members = members[rng.permutation(len(members))]
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    return train, val, {"source": "seeded", "val_fraction": val_fraction, "seed": int(seed)}
