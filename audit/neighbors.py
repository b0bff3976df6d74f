"""One blockwise pass over the cosine similarities of every image with every other: each row's
``k`` nearest neighbours and every pair above a similarity threshold, without the N x N matrix.

Rows are centered on the mean feature and L2-normalized first: pooled CNN features are
non-negative, so raw cosines of unrelated photos already sit near 0.7; centered, they spread
over [-1, 1] and a threshold means something. Query rows go ``block`` at a time against all
rows (one ``block x N`` float32 product in memory). The k nearest are found without sorting
each row: a lower bound of the k-th similarity from a sample of columns keeps only the few
candidates above it, which are then ranked.

Above ``exact_budget`` multiply-adds (N x N x D) the pass runs on the rows projected onto their
top ``dims`` principal directions (uncentered second moments of a sample: the subspace that
best keeps dot products), and each pair found there is re-scored on the full vectors; pairs are
searched ``margin`` below the threshold in the projection, so the few whose cosine the
projection lowers by more than that are missed. Neighbours come from the projection alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_BUDGET = 2e11  # multiply-adds of the full N x N x D product done exactly (about 12,000 rows at 1280)
PROJECTED_DIMS = 128
MARGIN = 0.05
SAMPLE_ROWS = 20000
BLOCK_BYTES = 128 << 20  # the block x N similarity block


@dataclass
class Neighbors:
    index: np.ndarray  # (N, k) int64, nearest first; -1 where a row has fewer than k others
    similarity: np.ndarray  # (N, k) float32, cosine of the centered rows
    pairs: np.ndarray  # (P, 2) int64, i < j, cosine >= threshold (on the full vectors)
    pair_similarity: np.ndarray  # (P,) float32
    projected: int  # dimensions of the projection searched, 0 when exact


def normalize_rows(X, mean: np.ndarray, block: int = 65536) -> np.ndarray:
    """``X - mean`` scaled to unit length, row by row, as a new float32 array (blockwise, so a
    ``CacheRows`` is read once)."""
    out = np.empty((len(X), X.shape[1]), dtype=np.float32)
    for start in range(0, len(X), block):
        part = np.asarray(X[start : start + block], dtype=np.float32) - mean
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        out[start : start + len(part)] = part / np.maximum(norms, 1e-12)
    return out


def row_mean(X, block: int = 65536) -> np.ndarray:
    total = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, len(X), block):
        total += np.asarray(X[start : start + block], dtype=np.float32).sum(axis=0, dtype=np.float64)
    return (total / max(len(X), 1)).astype(np.float32)


def principal_projection(Z: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """``Z`` on its top ``dims`` uncentered principal directions (from a sample of rows), re-normalized."""
    rng = np.random.default_rng(seed)
    sample = Z[np.sort(rng.choice(len(Z), min(len(Z), SAMPLE_ROWS), replace=False))]
    _, vectors = np.linalg.eigh(sample.T.astype(np.float64) @ sample)
    basis = vectors[:, ::-1][:, :dims].astype(np.float32)
    out = np.empty((len(Z), basis.shape[1]), dtype=np.float32)
    for start in range(0, len(Z), 65536):
        out[start : start + 65536] = Z[start : start + 65536] @ basis
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def neighbor_pass(
    Z: np.ndarray,
    k: int,
    threshold: float,
    same: np.ndarray | None = None,
    exact_budget: float = EXACT_BUDGET,
    dims: int = PROJECTED_DIMS,
) -> Neighbors:
    """Neighbours and near pairs of the unit rows ``Z``. ``same``: a group id per row (exact
    duplicates share one; -1 alone): rows of one group are never each other's neighbours nor a pair."""
    n, d = Z.shape
    k = max(0, min(k, n - 1))
    same = np.full(n, -1, dtype=np.int64) if same is None else np.asarray(same, dtype=np.int64)
    projected = 0
    search, cut = Z, threshold
    if float(n) * n * d > exact_budget and d > dims:
        search, cut, projected = principal_projection(Z, dims), threshold - MARGIN, dims
    index = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    found_i, found_j = [], []
    block = max(1, min(n, BLOCK_BYTES // (4 * max(n, 1))))
    rng = np.random.default_rng(0)
    probe = np.sort(rng.choice(n, min(n, max(4 * k, 4096)), replace=False))
    grouped = same >= 0
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        sim = search[rows] @ search.T
        sim[np.arange(len(rows)), rows] = -np.inf  # not its own neighbour
        for r in np.flatnonzero(grouped[rows]):  # nor a byte-identical copy's
            sim[r, same == same[rows[r]]] = -np.inf
        floor = _kth_lower_bound(sim[:, probe], k)
        bar = np.minimum(floor, cut)[:, None]  # the k-th bound, or the pair threshold when lower
        candidate_r, candidate_c = np.nonzero(sim >= bar)
        values = sim[candidate_r, candidate_c]
        _top_k(candidate_r, candidate_c, values, k, rows, index, sims)
        keep = (values >= cut) & (rows[candidate_r] < candidate_c)
        found_i.append(rows[candidate_r[keep]])
        found_j.append(candidate_c[keep])
    pairs = np.stack(
        [np.concatenate(found_i or [np.zeros(0, np.int64)]), np.concatenate(found_j or [np.zeros(0, np.int64)])], axis=1
    )
    pair_sim = np.einsum("ij,ij->i", Z[pairs[:, 0]], Z[pairs[:, 1]]) if len(pairs) else np.zeros(0, np.float32)
    keep = pair_sim >= threshold
    return Neighbors(index, sims, pairs[keep].astype(np.int64), pair_sim[keep].astype(np.float32), projected)


def _kth_lower_bound(sample: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k-th largest similarity among the sampled columns: the true k-th is at least that."""
    if k == 0:
        return np.full(len(sample), np.inf, dtype=np.float32)
    if sample.shape[1] <= k:
        return np.full(len(sample), -np.inf, dtype=np.float32)
    return np.partition(sample, sample.shape[1] - k, axis=1)[:, sample.shape[1] - k]


def _top_k(r, c, v, k: int, out_rows: np.ndarray, index: np.ndarray, sims: np.ndarray) -> None:
    """Write each row's k largest candidates (nearest first) into ``index``/``sims`` at ``out_rows``."""
    if k == 0 or len(r) == 0:
        return
    finite = np.isfinite(v)
    r, c, v = r[finite], c[finite], v[finite]
    order = np.lexsort((c, -v, r))  # by row, then most similar first (ties: lower index)
    r, c, v = r[order], c[order], v[order]
    first = np.searchsorted(r, r, side="left")
    rank = np.arange(len(r)) - first
    keep = rank < k
    index[out_rows[r[keep]], rank[keep]] = c[keep]
    sims[out_rows[r[keep]], rank[keep]] = v[keep]
