"""Outliers: images far from every other image, by the mean cosine similarity of their k nearest
neighbours: more than ``Z_CUT`` robust standard deviations (1.4826 x the median absolute deviation)
below the median, and only the most isolated ``MAX_SHARE`` of the data (a list to look at, not a filter)."""

from __future__ import annotations

import numpy as np

Z_CUT = 2.0
MAX_SHARE = 0.01


def find_outliers(similarity: np.ndarray, feats) -> list[dict]:
    """The most isolated images, by the mean similarity of their neighbours (rows with none: -1)."""
    finite = np.isfinite(similarity)
    counts = finite.sum(axis=1)
    density = np.where(counts > 0, np.where(finite, similarity, 0.0).sum(axis=1) / np.maximum(counts, 1), -1.0)
    if len(density) < 3:
        return []
    median = float(np.median(density))
    spread = 1.4826 * float(np.median(np.abs(density - median))) or 1e-12
    z = (median - density) / spread
    order = np.argsort(density, kind="stable")[: max(1, int(MAX_SHARE * len(density)))]
    return [
        {
            "kind": "outlier",
            "path": feats.paths[i],
            "label": feats.classes[int(feats.y[i])],
            "split": feats.split[i],
            "score": round(float(z[i]), 3),
            "neighbor_similarity": round(float(density[i]), 4),
        }
        for i in order
        if z[i] >= Z_CUT
    ]
