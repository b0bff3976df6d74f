"""A head run's probabilities: the head applied to the images' features (and their mirror under ``--tta``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import TlxError
from .features import ComputeSettings, head_features
from .images import hash_images


def head_proba(run, paths, how: ComputeSettings, tta: bool = False):
    """``(proba_of, failed, n_reused, n_computed)``; the mirror view is never in a cache."""
    hashes, failed = hash_images(paths)
    feats, n_reused, n_computed = head_features(run, paths, hashes, failed, how)
    flipped = head_features(run, paths, hashes, failed, replace(how, reuse_cache=False, flip=True))[0] if tta else {}
    ok = sorted(i for i in feats if i not in failed and (not tta or i in flipped))
    if not ok:
        return {}, failed, n_reused, n_computed
    proba = full_proba(run, np.stack([feats[i] for i in ok]).astype(np.float32, copy=False))
    if tta:
        proba = (proba + full_proba(run, np.stack([flipped[i] for i in ok]).astype(np.float32))) / 2
    return dict(zip(ok, proba, strict=True)), failed, n_reused, n_computed


def full_proba(run, X: np.ndarray) -> np.ndarray:
    """The head's probabilities, one column per class of the run (0 for a class it never saw)."""
    out = np.zeros((len(X), len(run.classes)), dtype=np.float64)
    out[:, head_class_indices(run)] = np.asarray(run.head.predict_proba(X), dtype=np.float64)
    return out


def head_class_indices(run) -> list[int]:
    """Positions in ``run.classes`` of the head's ``classes_`` (the columns of predict_proba)."""
    cols = []
    for c in np.asarray(run.head.classes_).tolist():
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(run.classes):
            cols.append(int(c))
        elif str(c) in run.classes:
            cols.append(run.classes.index(str(c)))
        else:
            raise TlxError(
                f"the head in {run.path} knows class {c!r}, which is not among the run's classes {run.classes}: "
                "the run is damaged; fit it again"
            )
    return cols
