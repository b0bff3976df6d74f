"""Split rules: the data's own split, else a seeded stratified one that is reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from tlx.errors import TlxError
from tlx.heads import split_indices


def problem(counts=(10, 6, 4)):
    labels = np.repeat(np.arange(len(counts)), counts)
    paths = [f"c{c}/img_{i:03d}.png" for i, c in enumerate(labels)]
    return paths, labels


def test_data_split_is_used_when_present():
    paths, labels = problem()
    split = ["train"] * 12 + ["val"] * 6 + ["test"] * 2
    train, val, info = split_indices(paths, labels, split, val_fraction=0.5, seed=3)
    assert info == {"source": "data"}
    np.testing.assert_array_equal(train, np.arange(12))
    np.testing.assert_array_equal(val, np.arange(12, 18))  # test rows are in neither


def test_seeded_split_is_stratified_and_disjoint():
    paths, labels = problem()
    train, val, info = split_indices(paths, labels, [""] * len(labels), val_fraction=0.25, seed=0)
    assert info == {"source": "seeded", "val_fraction": 0.25, "seed": 0}
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    # per class: round(0.25 * n), at least 1 in each part
    assert [int(np.sum(labels[val] == c)) for c in range(3)] == [2, 2, 1]
    assert all(np.sum(labels[train] == c) >= 1 for c in range(3))


def test_seeded_split_is_deterministic_and_order_free():
    paths, labels = problem()
    blank = [""] * len(labels)
    train, val, _ = split_indices(paths, labels, blank, 0.3, seed=7)
    again = split_indices(paths, labels, blank, 0.3, seed=7)
    np.testing.assert_array_equal(train, again[0])
    # shuffle the rows: the same images land in val
    perm = np.random.default_rng(1).permutation(len(labels))
    t2, v2, _ = split_indices([paths[i] for i in perm], labels[perm], blank, 0.3, seed=7)
    assert {paths[perm[i]] for i in v2} == {paths[i] for i in val}
    # another seed gives another split
    other = split_indices(paths, labels, blank, 0.3, seed=8)[1]
    assert {paths[i] for i in other} != {paths[i] for i in val}


def test_train_only_split_falls_back_to_seeded_and_skips_test_rows():
    paths, labels = problem((6, 6))
    split = ["train"] * 10 + ["test"] * 2
    train, val, info = split_indices(paths, labels, split, 0.2, 0)
    assert info["source"] == "seeded"
    assert not {10, 11} & (set(train) | set(val))


def test_class_with_one_image_is_refused():
    paths, labels = problem((5, 1))
    with pytest.raises(TlxError, match="class 'bees' has 1 image: .* at least 2 per class"):
        split_indices(paths, labels, [""] * 6, classes=["ants", "bees"])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_0_1_is_refused(fraction):
    paths, labels = problem()
    with pytest.raises(TlxError, match="between 0 and 1"):
        split_indices(paths, labels, [""] * len(labels), val_fraction=fraction)
