"""``rf``: a random forest (scikit-learn's RandomForestClassifier as a model), grown in numpy.

Each tree sees a bootstrap sample of the rows and, at every node, a fresh random subset of
``max_features`` features (``"sqrt"`` by default); it splits on the Gini criterion until its
leaves are pure or cannot be split without a leaf under ``min_samples_leaf`` rows (counted as
distinct rows of the bootstrap sample, as scikit-learn counts them). A tree's probabilities are
its leaf's class frequencies (bootstrap-weighted) and the forest averages them, as scikit-learn.
``class_weight="balanced"`` draws each bootstrap sample in proportion to the class weights, as
scikit-learn 1.9 does.

How it stays fast without compiled code (a node-by-node Python tree builder would take
minutes): features are binned once into at most ``max_bins`` quantile bins (uint8, as
scikit-learn's HistGradientBoosting does), and all trees grow together, level by level. A
level is a handful of numpy operations over every (row, node) pair of every tree at once: one
weighted ``np.bincount`` builds the class histogram of each (node, drawn feature, bin); cumulative
sums give the class counts left of every threshold, hence every split's Gini score; an argmax
per node picks its split. Thresholds are bin edges, kept as float32 values, so a fitted forest
predicts from raw features, and is saved as flat arrays (feature, threshold, left, right and
class frequencies per node, plus each tree's root).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np

from .base import Head
from .constraints import Range, one_of
from .registry import register_head

CELLS = 1 << 16  # histogram cells (class x node x feature x bin) per chunk: small temporaries stay in cache
GROUPS = 2  # batches of trees at least (grown in parallel threads where there are cores)
PAIRS = 1 << 23  # (row, drawn feature) pairs per batch of trees: bounds the gathered bins
QUANTILE_ROWS = 50_000  # rows the bin edges are estimated from (a seeded subsample above that)
COLUMNS = 128  # features sorted at a time for the bin edges
ROWS = 8192  # rows binned at a time


def bin_edges(X: np.ndarray, max_bins: int, rng: np.random.Generator) -> np.ndarray:
    """(D, max_bins - 1) float32 quantile edges of each feature (linear interpolation, as
    ``np.quantile``), from at most ``QUANTILE_ROWS`` rows; bin b holds edge[b-1] < x <= edge[b]."""
    sample = X if len(X) <= QUANTILE_ROWS else X[np.sort(rng.choice(len(X), QUANTILE_ROWS, replace=False))]
    at = np.linspace(0.0, 1.0, max_bins + 1)[1:-1] * (len(sample) - 1)
    below = np.floor(at).astype(np.int64)
    above = np.minimum(below + 1, len(sample) - 1)
    frac = (at - below)[:, None]
    edges = np.empty((X.shape[1], max_bins - 1), dtype=np.float32)
    for start in range(0, X.shape[1], COLUMNS):  # a few columns at a time: the sorted copy stays small
        ordered = np.sort(sample[:, start : start + COLUMNS], axis=0)
        low, high = ordered[below].astype(np.float64), ordered[above].astype(np.float64)
        edges[start : start + COLUMNS] = (low * (1 - frac) + high * frac).T
    return edges


def apply_bins(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(n, D) uint8 bin indices: how many of the feature's edges lie below the value. Rows go
    block by block through a transposed copy, so each search reads a contiguous column."""
    out = np.empty((X.shape[1], len(X)), dtype=np.uint8)
    for start in range(0, len(X), ROWS):
        block = np.ascontiguousarray(X[start : start + ROWS].T)
        for f in range(X.shape[1]):
            out[f, start : start + ROWS] = np.searchsorted(edges[f], block[f], side="left")
    return np.ascontiguousarray(out.T)


class Nodes:
    """Flat, growable arrays of the nodes grown so far; a leaf has feature -1, and ``value``
    holds each node's class frequencies."""

    def __init__(self, n_classes: int):
        self.size = 0
        self.roots = np.zeros(0, np.int64)
        self.feature = np.full(1024, -1, np.int32)
        self.threshold = np.zeros(1024, np.float32)
        self.left = np.full(1024, -1, np.int32)
        self.right = np.full(1024, -1, np.int32)
        self.value = np.zeros((1024, n_classes), np.float32)

    def add(self, totals: np.ndarray) -> np.ndarray:
        """New leaves with these (weighted) class totals; returns their ids."""
        start, count = self.size, len(totals)
        while start + count > len(self.feature):
            grow = len(self.feature)
            self.feature = np.concatenate([self.feature, np.full(grow, -1, np.int32)])
            self.threshold = np.concatenate([self.threshold, np.zeros(grow, np.float32)])
            self.left = np.concatenate([self.left, np.full(grow, -1, np.int32)])
            self.right = np.concatenate([self.right, np.full(grow, -1, np.int32)])
            self.value = np.concatenate([self.value, np.zeros((grow, self.value.shape[1]), np.float32)])
        self.value[start : start + count] = totals / totals.sum(axis=1, keepdims=True)
        self.size += count
        return np.arange(start, start + count)

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "feature_": self.feature[:n].copy(),
            "threshold_": self.threshold[:n].copy(),
            "left_": self.left[:n].copy(),
            "right_": self.right[:n].copy(),
            "value_": self.value[:n].copy(),
        }


def _draw_features(rng: np.random.Generator, nodes: int, d: int, m: int) -> np.ndarray:
    """(nodes, m) distinct features per row, uniformly: draw, then redraw repeated ones."""
    feats = np.sort(rng.integers(0, d, (nodes, m)), axis=1)
    for _ in range(100):
        repeated = np.zeros(feats.shape, dtype=bool)
        repeated[:, 1:] = feats[:, 1:] == feats[:, :-1]
        if not repeated.any():
            break
        feats[repeated] = rng.integers(0, d, int(repeated.sum()))
        feats.sort(axis=1)
    return feats


def _dense_splits(Xb, node, row, w, cls, feats, n_classes: int, bins: int, min_leaf: int):
    """For nodes ``0..len(feats)-1`` (entries sorted by node): the best (slot, bin) per node and
    whether it is a valid split, over chunks of nodes so that no histogram exceeds ``CELLS``."""
    a, m = feats.shape
    per_node = m * bins
    step = max(1, CELLS // (per_node * n_classes))
    bounds = np.searchsorted(node, np.arange(0, a + step, step).clip(max=a))
    # Bootstrap counts are whole numbers: float32 sums stay exact up to 2^24 copies.
    dtype = np.float32 if len(Xb) < 2**24 else np.float64
    best_slot, best_bin, valid = np.zeros(a, np.int64), np.zeros(a, np.int64), np.zeros(a, bool)
    for c, first in enumerate(range(0, a, step)):
        lo, hi, count = bounds[c], bounds[c + 1], min(step, a - first)
        cells = count * per_node
        binned = Xb[row[lo:hi, None], feats[node[lo:hi]]]  # (entries, m) bins of the drawn features
        slot_key = ((node[lo:hi] - first)[:, None] * m + np.arange(m)) * bins + binned
        # Class-major (class, node, feature slot, bin): sums over classes add contiguous blocks.
        key = (cls[lo:hi, None] * cells + slot_key).ravel()
        left = np.bincount(key, weights=np.repeat(w[lo:hi], m), minlength=n_classes * cells).astype(dtype)
        left = np.cumsum(left.reshape(n_classes, count, m, bins), axis=3, out=left.reshape(n_classes, count, m, bins))
        total = left[:, :, :1, -1:]  # each node's class totals (the same for every slot)
        n_left = left.sum(axis=0)
        n_total = total.sum(axis=0)
        n_right = n_total - n_left
        with np.errstate(divide="ignore", invalid="ignore"):
            score = _gini_score(left, total, n_left, n_right)
        ok = (n_left > 0) & (n_right > 0)
        if min_leaf > 1:  # distinct rows on each side, not bootstrap copies
            rows_left = np.cumsum(np.bincount(slot_key.ravel(), minlength=cells).reshape(count, m, bins), axis=2)
            ok &= (rows_left >= min_leaf) & (rows_left[:, :, -1:] - rows_left >= min_leaf)
        score = np.where(ok, score, -np.inf).reshape(count, per_node)
        best = np.argmax(score, axis=1)
        best_slot[first : first + count], best_bin[first : first + count] = np.divmod(best, bins)
        valid[first : first + count] = np.isfinite(score[np.arange(count), best])
    return best_slot, best_bin, valid


def _sorted_splits(Xb, node, row, w, cls, feats, n_classes: int, bins: int, min_leaf: int):
    """What ``_dense_splits`` finds, for nodes with few rows: the (row, drawn feature) pairs are
    sorted by (node, feature slot, bin) and every threshold between two occupied bins is scored
    from running class sums, so the cost follows the pairs rather than bins x classes per node.
    Candidates are visited in the same (slot, bin) order, so ties go the same way."""
    a, m = feats.shape
    key = ((node[:, None] * m + np.arange(m)) * bins + Xb[row[:, None], feats[node]]).ravel()
    order = np.argsort(key, kind="stable")
    key, entry = key[order], order // m
    group = key // bins  # node * m + slot
    sums = np.zeros((len(key), n_classes), dtype=np.float64)
    sums[np.arange(len(key)), cls[entry]] = w[entry]
    np.cumsum(sums, axis=0, out=sums)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(key)] - 1
    of = np.repeat(np.arange(len(starts)), ends - starts + 1)  # each pair's group
    before = np.where(starts[:, None] > 0, sums[np.maximum(starts - 1, 0)], 0.0)
    # A threshold after pair i: the next pair is in the same group and in a higher bin.
    cut = np.flatnonzero((np.r_[group[1:] == group[:-1], False]) & (np.r_[key[1:] != key[:-1], False]))
    g = of[cut]
    # Whole-number counts, exact in float64 however long the running sum; then scored in the
    # precision _dense_splits uses, so both find the same split.
    dtype = np.float32 if len(Xb) < 2**24 else np.float64
    left = (sums[cut] - before[g]).T.astype(dtype)
    total = (sums[ends[g]] - before[g]).T.astype(dtype)
    n_left = left.sum(axis=0)
    score = _gini_score(left, total, n_left, total.sum(axis=0) - n_left)
    if min_leaf > 1:  # pairs are distinct rows of the node
        rows_left = cut - starts[g] + 1
        keep = (rows_left >= min_leaf) & (ends[g] - cut >= min_leaf)
        cut, g, score = cut[keep], g[keep], score[keep]
    best_slot, best_bin, valid = np.zeros(a, np.int64), np.zeros(a, np.int64), np.zeros(a, bool)
    if not len(cut):
        return best_slot, best_bin, valid
    owner = group[cut] // m
    first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = np.maximum.reduceat(score, first)
    winners = np.flatnonzero(score == np.repeat(best, np.diff(np.r_[first, len(score)])))
    nodes, at = np.unique(owner[winners], return_index=True)  # the first best candidate per node
    chosen = cut[winners[at]]
    best_slot[nodes], best_bin[nodes], valid[nodes] = group[chosen] % m, key[chosen] % bins, True
    return best_slot, best_bin, valid


def _best_splits(Xb, node, row, w, cls, feats, n_classes: int, bins: int, min_leaf: int):
    """The best split of every node: nodes with few rows by sorting their pairs, the others from
    dense histograms (whichever touches fewer numbers); both find the same split."""
    a = len(feats)
    sizes = np.bincount(node, minlength=a)
    # Measured crossover: sorting wins below a quarter of the bins' rows with two classes (a
    # dense histogram is cheap then), below half of them with more.
    small = sizes < (bins // 4 if n_classes == 2 else bins // 2)
    if not small.any() or small.all():
        method = _sorted_splits if small.all() else _dense_splits
        return method(Xb, node, row, w, cls, feats, n_classes, bins, min_leaf)
    slot, cut, valid = np.zeros(a, np.int64), np.zeros(a, np.int64), np.zeros(a, bool)
    for method, chosen in ((_sorted_splits, small), (_dense_splits, ~small)):
        rows = chosen[node]
        local = (np.cumsum(chosen) - 1)[node[rows]]
        found = method(Xb, local, row[rows], w[rows], cls[rows], feats[chosen], n_classes, bins, min_leaf)
        slot[chosen], cut[chosen], valid[chosen] = found
    return slot, cut, valid


def _gini_score(left, total, n_left, n_right) -> np.ndarray:
    """What a split maximizes to minimize the weighted Gini impurity of its children:
    ``sum_k left_k^2 / n_left + sum_k right_k^2 / n_right``. For two classes the same order
    comes from ``-(l0 * l1 / n_left + r0 * r1 / n_right)`` in fewer passes over the cells."""
    if len(left) == 2:
        return -(left[0] * left[1] / n_left + (total[0] - left[0]) * (total[1] - left[1]) / n_right)
    pure_left, pure_right = np.zeros_like(n_left), np.zeros_like(n_left)
    for k in range(len(left)):
        pure_left += np.square(left[k])
        pure_right += np.square(total[k] - left[k])
    return pure_left / n_left + pure_right / n_right


def grow_trees(Xb, edges, t, sample_weight, n_trees: int, m: int, min_leaf: int, rng, nodes: Nodes) -> np.ndarray:
    """Grow ``n_trees`` trees on the binned rows ``Xb`` (class indices ``t``) into ``nodes``;
    returns their root ids."""
    n, d = Xb.shape
    k, bins = nodes.value.shape[1], edges.shape[1] + 1
    if sample_weight is None:
        draws = rng.integers(0, n, (n_trees, n))
    else:  # scikit-learn (1.9) draws the bootstrap in proportion to the class weights
        cdf = np.cumsum(sample_weight / sample_weight.sum())
        draws = np.minimum(np.searchsorted(cdf, rng.random((n_trees, n)), side="right"), n - 1)
    counts = np.bincount((draws + n * np.arange(n_trees)[:, None]).ravel(), minlength=n_trees * n)
    node, row = np.divmod(np.flatnonzero(counts), n)  # entries (node, row), sorted by node
    w = counts[counts > 0].astype(np.float64)  # bootstrap copies
    ids = roots = nodes.add(np.bincount(node * k + t[row], weights=w, minlength=n_trees * k).reshape(n_trees, k))
    while len(node):
        totals = np.bincount(node * k + t[row], weights=w, minlength=len(ids) * k).reshape(len(ids), k)
        distinct = np.bincount(node, minlength=len(ids))
        splittable = ((totals > 0).sum(axis=1) > 1) & (distinct >= max(2, 2 * min_leaf))
        keep = splittable[node]  # pure or small nodes stay leaves; their rows leave the level
        node, row, w, ids = (np.cumsum(splittable) - 1)[node[keep]], row[keep], w[keep], ids[splittable]
        if not len(ids):
            break
        feats = _draw_features(rng, len(ids), d, m)
        slot, cut, valid = _best_splits(Xb, node, row, w, t[row], feats, k, bins, min_leaf)
        chosen = feats[np.arange(len(ids)), slot]
        keep = valid[node]
        node, row, w, ids, chosen, cut = (
            (np.cumsum(valid) - 1)[node[keep]],
            row[keep],
            w[keep],
            ids[valid],
            chosen[valid],
            cut[valid],
        )
        child = 2 * node + (Xb[row, chosen[node]] > cut[node])
        order = np.argsort(child, kind="stable")
        node, row, w = child[order], row[order], w[order]
        totals = np.bincount(node * k + t[row], weights=w, minlength=2 * len(ids) * k).reshape(2 * len(ids), k)
        children = nodes.add(totals)
        nodes.feature[ids], nodes.threshold[ids] = chosen, edges[chosen, cut]
        nodes.left[ids], nodes.right[ids] = children[0::2], children[1::2]
        ids = children
    return roots


def _max_features(value, d: int) -> int:
    if value == "sqrt":
        return max(1, int(np.sqrt(d)))
    if value == "log2":
        return max(1, int(np.log2(d)))
    if value is None:
        return d
    if isinstance(value, Integral):
        return min(int(value), d)
    return max(1, int(float(value) * d))


@register_head(
    "rf",
    main_param="min_samples_leaf",
    grid=[32, 16, 8, 4, 2, 1],
    description="random forest (scikit-learn's RandomForestClassifier as a model, grown in numpy on binned features)",
    constraints={
        "n_estimators": [Range(Integral, 1, None, "left")],
        "min_samples_leaf": [Range(Integral, 1, None, "left")],
        "max_features": [one_of("sqrt", "log2"), Range(Integral, 1, None, "left"), Range(Real, 0, 1, "right"), None],
        "max_bins": [Range(Integral, 2, 256, "both")],
    },
)
class RfHead(Head):
    """Random forest: ``n_estimators`` trees, each on a bootstrap sample, ``max_features``
    features drawn per node (``"sqrt"``, ``"log2"``, a count or a fraction), Gini splits on
    ``max_bins`` quantile bins per feature, leaves of at least ``min_samples_leaf`` rows; no
    scaling (trees do not need it).

    100 trees by default (scikit-learn's default; tlx used 300): on ants/bees 300 trees scored
    0.945 against 0.944 over 8 seeds, for three times the fit (0.37 s against 0.13 s), which
    would cost the ``fit-head`` start-up target (1.5 s) on a busy 2-core machine."""

    _tensors = ("feature_", "threshold_", "left_", "right_", "value_", "roots_")
    feature_: np.ndarray  # per node: the feature split on, -1 at a leaf
    threshold_: np.ndarray  # rows with feature <= threshold go left
    left_: np.ndarray
    right_: np.ndarray
    value_: np.ndarray  # per node: class frequencies (what a leaf predicts)
    roots_: np.ndarray  # per tree: its root node

    def __init__(
        self,
        n_estimators: int = 100,
        min_samples_leaf: int = 1,
        max_features="sqrt",
        max_bins: int = 64,
        class_weight=None,
        seed: int = 0,
    ):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_bins = max_bins
        self.class_weight = class_weight
        self.seed = seed

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        n, d = X.shape
        seeds = np.random.SeedSequence(int(self.seed))
        edges = bin_edges(X, int(self.max_bins), np.random.default_rng(seeds.spawn(1)[0]))
        Xb = apply_bins(X, edges)
        t = np.searchsorted(self.classes_, y)
        weights = self._class_weights(y)
        m = _max_features(self.max_features, d)
        total = int(self.n_estimators)
        # Batches of trees, each from its own seed: as many as the gathered bins allow in memory,
        # and at least GROUPS, so that threads can grow them side by side (numpy releases the
        # GIL in its array loops). The batches do not depend on the thread count: same seed,
        # same forest, on any machine.
        per_batch = max(1, min(PAIRS // max(1, int(0.64 * n) * m), -(-total // GROUPS)))
        sizes = [min(per_batch, total - start) for start in range(0, total, per_batch)]
        streams = seeds.spawn(len(sizes))

        def grow(batch: int) -> Nodes:
            nodes = Nodes(len(self.classes_))
            nodes.roots = grow_trees(
                Xb,
                edges,
                t,
                weights,
                sizes[batch],
                m,
                int(self.min_samples_leaf),
                np.random.default_rng(streams[batch]),
                nodes,
            )
            return nodes

        workers = min(len(sizes), os.cpu_count() or 1)
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                grown = list(pool.map(grow, range(len(sizes))))
        else:
            grown = [grow(batch) for batch in range(len(sizes))]
        self._merge(grown)

    def _merge(self, grown: list[Nodes]) -> None:
        """One set of flat arrays from the batches' nodes (child and root ids shifted)."""
        offsets = np.cumsum([0] + [g.size for g in grown[:-1]])
        parts = [g.arrays() for g in grown]
        for name in ("feature_", "threshold_", "value_"):
            setattr(self, name, np.concatenate([p[name] for p in parts]))
        for name in ("left_", "right_"):  # leaves keep -1
            setattr(
                self,
                name,
                np.concatenate([np.where(p[name] >= 0, p[name] + o, -1) for p, o in zip(parts, offsets, strict=True)]),
            )
        self.roots_ = np.concatenate([g.roots + o for g, o in zip(grown, offsets, strict=True)]).astype(np.int32)

    def apply(self, X) -> np.ndarray:
        """(n, n_estimators) leaf id of each row in each tree."""
        X = self._check_X(X)
        out = np.empty((len(X), len(self.roots_)), dtype=np.int64)
        step = max(1, (1 << 22) // len(self.roots_))
        for start in range(0, len(X), step):
            block = X[start : start + step]
            at = np.broadcast_to(self.roots_.astype(np.int64), (len(block), len(self.roots_))).copy()
            rows = np.arange(len(block))[:, None]
            while True:
                feature = self.feature_[at]
                inner = feature >= 0
                if not inner.any():
                    break
                left = block[rows, np.maximum(feature, 0)] <= self.threshold_[at]
                at = np.where(inner, np.where(left, self.left_[at], self.right_[at]), at)
            out[start : start + len(block)] = at
        return out

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((len(X), len(self.classes_)))
        step = max(1, (1 << 20) // len(self.roots_))
        for start in range(0, len(X), step):
            leaves = self.apply(X[start : start + step])
            out[start : start + len(leaves)] = self.value_[leaves].mean(axis=1, dtype=np.float64)
        return out

    def arrays_fit(self, n_classes: int, width: int) -> bool:
        if any(getattr(self, name, None) is None for name in self._tensors):
            return False
        feature, threshold, left, right = self.feature_, self.threshold_, self.left_, self.right_
        value, roots = self.value_, self.roots_
        size = len(feature)
        if value.shape != (size, n_classes) or not len(threshold) == len(left) == len(right) == size:
            return False
        inner = feature >= 0
        return bool(
            len(roots) > 0
            and roots.min() >= 0
            and roots.max() < size
            and (feature < width).all()
            and (left[inner] > np.flatnonzero(inner)).all()  # children come after their parent: no cycles
            and (right[inner] > np.flatnonzero(inner)).all()
            and (left[inner] < size).all()
            and (right[inner] < size).all()
        )
