"""Each image's ``k`` nearest neighbours and every pair above a similarity threshold, block by
block, without the N x N matrix in memory: exact up to ``EXACT_BUDGET``, above it an inverted-file
search (faiss's IVF, in numpy) on the top principal directions, near-duplicate candidates re-scored
on the full rows. Rows are centered and L2-normalized first: pooled CNN features are non-negative,
so raw cosines of unrelated photos already sit near 0.7; centered, a threshold means something."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_BUDGET = 2e11  # multiply-adds of the N x N x D product searched exactly (12,500 rows at 1280)
SEARCH_DIMS = 64
SAMPLE_ROWS = 10000
POWER_STEPS = 3
PROBE_COLUMNS = 2048  # columns sampled for each row's k-th similarity bound
PROBES = 16  # lists searched per list on large data
KMEANS_STEPS = 10
BLOCK_BYTES = 128 << 20  # the block x N similarity block


@dataclass
class Neighbors:
    index: np.ndarray  # (N, k) int64, nearest first; -1 where a row has fewer than k others
    similarity: np.ndarray  # (N, k) float32, cosine of the centered rows
    pairs: np.ndarray  # (P, 2) int64, i < j, cosine >= threshold (on the full vectors)
    pair_similarity: np.ndarray  # (P,) float32


def normalize_rows(X, mean: np.ndarray, block: int = 8192) -> np.ndarray:
    """``X - mean`` scaled to unit length, as a new float32 array (blockwise: a ``CacheRows`` is read once)."""
    out = np.empty((len(X), X.shape[1]), dtype=np.float32)
    for start in range(0, len(X), block):
        part = np.asarray(X[start : start + block], dtype=np.float32) - mean
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        out[start : start + len(part)] = part / np.maximum(norms, 1e-12)
    return out


def row_mean(X, block: int = 8192) -> np.ndarray:
    total = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, len(X), block):
        total += np.asarray(X[start : start + block], dtype=np.float32).sum(axis=0, dtype=np.float64)
    return (total / max(len(X), 1)).astype(np.float32)


def is_large(n: int, d: int) -> bool:
    """More multiply-adds than ``EXACT_BUDGET`` for the exact N x N x D search."""
    return float(n) * n * d > EXACT_BUDGET and d > SEARCH_DIMS


def principal_basis(X, mean: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """(D, dims): the top uncentered principal directions of a sample of the centered unit rows (the
    subspace that best keeps their dot products), by randomized subspace iteration on their second
    moments: a full ``eigh`` of 1280 x 1280 took 13 s on this busy machine, this well under 1."""
    rng = np.random.default_rng(seed)
    sample = normalize_rows(X[np.sort(rng.choice(len(X), min(len(X), SAMPLE_ROWS), replace=False))], mean)
    moments = (sample.T @ sample).astype(np.float64)
    dims = min(dims, moments.shape[0])
    Q = rng.standard_normal((moments.shape[0], min(moments.shape[0], dims + 16)))
    for _ in range(POWER_STEPS):
        Q, _ = np.linalg.qr(moments @ Q)
    _, vectors = np.linalg.eigh(Q.T @ moments @ Q)
    return np.ascontiguousarray((Q @ vectors[:, ::-1])[:, :dims]).astype(np.float32)


def project(X, mean: np.ndarray, basis: np.ndarray, block: int = 8192) -> np.ndarray:
    """The centered unit rows of ``X`` on ``basis`` (not re-normalized), block by block."""
    out = np.empty((len(X), basis.shape[1]), dtype=np.float32)
    for start in range(0, len(X), block):
        out[start : start + block] = normalize_rows(X[start : start + block], mean) @ basis
    return out


def unit(Z: np.ndarray) -> np.ndarray:
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def rescore(X, mean: np.ndarray, pairs: np.ndarray, threshold: float, block: int = 65536):
    """``(pairs, cosine)``: the pairs whose cosine on the full centered rows reaches ``threshold``.
    (x_i - m).(x_j - m) = x_i.x_j - x_i.m - x_j.m + m.m with each row's x.m and norm computed once:
    a pair costs one dot product of raw rows, not two centered, normalized copies."""
    along_mean = np.empty(len(X), dtype=np.float64)
    norms = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), 8192):
        part = np.asarray(X[start : start + 8192], dtype=np.float32)
        along_mean[start : start + len(part)] = part @ mean
        norms[start : start + len(part)] = np.linalg.norm(part - mean, axis=1)
    mm = float(mean.astype(np.float64) @ mean)
    sims = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), block):
        i, j = pairs[start : start + block, 0], pairs[start : start + block, 1]
        dot = np.einsum("ij,ij->i", X[i], X[j], dtype=np.float64) - along_mean[i] - along_mean[j] + mm
        sims[start : start + len(i)] = dot / np.maximum(norms[i] * norms[j], 1e-12)
    keep = sims >= threshold
    return pairs[keep], sims[keep]


def candidate_pairs(index: np.ndarray) -> np.ndarray:
    """(P, 2) each row with each of its neighbours, i < j, once."""
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    cols = index.ravel()
    valid = cols >= 0
    pairs = np.sort(np.stack([rows[valid], cols[valid]], axis=1), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def neighbor_pass(search: np.ndarray, k: int, threshold: float, same: np.ndarray | None = None) -> Neighbors:
    """Exact neighbours and pairs at or above ``threshold`` (``inf``: none) of the unit rows ``search``.
    ``same``: a group id per row (exact duplicates share one; -1 alone): rows of one group are
    never each other's neighbours nor a pair. The k nearest are found without sorting each row:
    a lower bound of the k-th similarity from a sample of columns keeps only a few candidates."""
    n = len(search)
    k = max(0, min(k, n - 1))
    same = np.full(n, -1, dtype=np.int64) if same is None else np.asarray(same, dtype=np.int64)
    index = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    found_pairs, found_sims = [np.zeros((0, 2), np.int64)], [np.zeros(0, np.float32)]
    block = max(1, min(n, BLOCK_BYTES // (4 * max(n, 1))))
    probe = np.sort(np.random.default_rng(0).choice(n, min(n, max(4 * k, PROBE_COLUMNS)), replace=False))
    grouped = same >= 0
    # One similarity block and one mask, reused: a fresh 128 MB array per block cost a page fault
    # per 4 KiB (a fifth of the time at 100,000 rows).
    sim_buffer, mask_buffer = np.empty((block, n), dtype=np.float32), np.empty((block, n), dtype=bool)
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        sim, mask = sim_buffer[: len(rows)], mask_buffer[: len(rows)]
        np.matmul(search[rows], search.T, out=sim)
        sim[np.arange(len(rows)), rows] = -np.inf  # not its own neighbour
        for r in np.flatnonzero(grouped[rows]):  # nor a byte-identical copy's
            sim[r, same == same[rows[r]]] = -np.inf
        bar = np.minimum(_kth_lower_bound(sim[:, probe], k), threshold)[:, None]
        np.greater_equal(sim, bar, out=mask)
        candidate_r, candidate_c = np.nonzero(mask)
        values = sim[candidate_r, candidate_c]
        _top_k(candidate_r, candidate_c, values, k, rows, index, sims)
        keep = (values >= threshold) & (rows[candidate_r] < candidate_c)
        found_pairs.append(np.stack([rows[candidate_r[keep]], candidate_c[keep]], axis=1))
        found_sims.append(values[keep])
    pairs = np.concatenate(found_pairs).astype(np.int64)
    return Neighbors(index, sims, pairs, np.concatenate(found_sims).astype(np.float32))


def find_neighbors(X, group: np.ndarray, k: int, threshold: float, label_dims: int, seed: int = 0):
    """``(neighbours, projected rows or None)``: exact on small data; on large data searched on the
    top principal directions, returned too (``label_dims`` of them). A projection makes look-alikes
    closer than they are, so it cannot be thresholded: there each image's k nearest are the
    near-duplicate candidates, re-scored on the full rows."""
    mean = row_mean(X)
    if not is_large(*X.shape):
        return neighbor_pass(normalize_rows(X, mean), k, threshold, group), None
    projected = project(X, mean, principal_basis(X, mean, label_dims, seed))
    found = clustered_neighbors(unit(projected[:, :SEARCH_DIMS]), k, group, seed)
    found.pairs, found.pair_similarity = rescore(X, mean, candidate_pairs(found.index), threshold)
    return found, projected


def spherical_kmeans(Z: np.ndarray, n_lists: int, seed: int = 0) -> np.ndarray:
    """(n_lists, d) unit centroids of the unit rows ``Z``, from a sample of at most 64 rows per list."""
    rng = np.random.default_rng(seed)
    sample = Z[rng.choice(len(Z), min(len(Z), 64 * n_lists), replace=False)]
    centroids = sample[rng.choice(len(sample), n_lists, replace=False)].copy()
    for _ in range(KMEANS_STEPS):
        assign = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        empty = np.flatnonzero(~sums.any(axis=1))
        sums[empty] = sample[rng.choice(len(sample), len(empty), replace=False)]  # re-seed empty lists
        centroids = unit(sums)
    return centroids


def clustered_neighbors(search: np.ndarray, k: int, same: np.ndarray | None = None, seed: int = 0) -> Neighbors:
    """Approximate k nearest neighbours of the unit rows ``search``: about sqrt(N) lists by spherical
    k-means, each list's rows compared with the rows of the ``PROBES`` lists nearest to it only."""
    n = len(search)
    k = max(0, min(k, n - 1))
    same = np.full(n, -1, dtype=np.int64) if same is None else np.asarray(same, dtype=np.int64)
    n_lists = max(1, int(np.sqrt(n)))
    centroids = spherical_kmeans(search, n_lists, seed)
    assign = np.concatenate([np.argmax(search[s : s + 8192] @ centroids.T, axis=1) for s in range(0, n, 8192)])
    order = np.argsort(assign, kind="stable")
    members = np.split(order, np.searchsorted(assign[order], np.arange(1, n_lists)))
    closeness = centroids @ centroids.T
    np.fill_diagonal(closeness, np.inf)  # a list searches itself first
    probed = np.argsort(-closeness, axis=1)[:, : min(PROBES, n_lists)]
    index = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    for c in range(n_lists):
        if len(members[c]) == 0 or k == 0:
            continue
        candidates = np.concatenate([members[j] for j in probed[c]])
        chunk = max(1, BLOCK_BYTES // (4 * len(candidates)))
        for start in range(0, len(members[c]), chunk):
            rows = members[c][start : start + chunk]
            sim = search[rows] @ search[candidates].T
            sim[np.arange(len(rows)), start + np.arange(len(rows))] = -np.inf  # its own list comes first
            for r in np.flatnonzero(same[rows] >= 0):
                sim[r, same[candidates] == same[rows[r]]] = -np.inf
            take = min(k, sim.shape[1])
            top = np.argpartition(sim, sim.shape[1] - take, axis=1)[:, -take:]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1, kind="stable"), 1)
            index[rows, :take] = candidates[top]
            sims[rows, :take] = np.take_along_axis(sim, top, 1)
    index[~np.isfinite(sims)] = -1
    return Neighbors(index, sims, np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32))


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
