"""Split rules: the data's own split, else a seeded, per-class one that is reproducible and
stable: each image's side depends on its own content hash and the seed only."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from tlx.errors import TlxError
from tlx.heads import split_indices


def problem(counts=(10, 6, 4)):
    labels = np.repeat(np.arange(len(counts)), counts)
    paths = [f"c{c}/img_{i:03d}.png" for i, c in enumerate(labels)]
    return paths, labels


def fake_hashes(paths: list[str]) -> list[str]:
    return [hashlib.sha256(p.encode()).hexdigest() for p in paths]


def seeded(paths, labels, val_fraction=0.2, seed=0, hashes=None):
    """The seeded split's val members, as a set of hashes."""
    hashes = fake_hashes(paths) if hashes is None else hashes
    _, val, _ = split_indices(paths, labels, [""] * len(labels), val_fraction, seed, hashes=hashes)
    return {hashes[i] for i in val}


def test_data_split_is_used_when_present():
    paths, labels = problem()
    split = ["train"] * 12 + ["val"] * 6 + ["test"] * 2
    train, val, info = split_indices(paths, labels, split, val_fraction=0.5, seed=3, hashes=fake_hashes(paths))
    assert info == {"source": "data"}
    np.testing.assert_array_equal(train, np.arange(12))
    np.testing.assert_array_equal(val, np.arange(12, 18))  # test rows are in neither


def test_seeded_split_is_per_class_and_disjoint():
    paths, labels = problem((200, 60, 4, 2))
    train, val, info = split_indices(
        paths, labels, [""] * len(labels), val_fraction=0.25, seed=0, hashes=fake_hashes(paths)
    )
    assert info == {"source": "seeded", "val_fraction": 0.25, "seed": 0}
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    # about the fraction in each large class, and at least 1 in each part of every class
    assert abs(np.sum(labels[val] == 0) - 50) <= 15 and abs(np.sum(labels[val] == 1) - 15) <= 8
    assert all(np.sum(labels[val] == c) >= 1 and np.sum(labels[train] == c) >= 1 for c in range(4))


def test_seeded_split_is_deterministic_and_order_free():
    paths, labels = problem()
    val = seeded(paths, labels, 0.3, seed=7)
    assert seeded(paths, labels, 0.3, seed=7) == val
    # shuffle the rows: the same images land in val
    perm = np.random.default_rng(1).permutation(len(labels))
    assert (
        seeded([paths[i] for i in perm], labels[perm], 0.3, seed=7, hashes=[fake_hashes(paths)[i] for i in perm]) == val
    )
    # another seed gives another split
    assert seeded(paths, labels, 0.3, seed=8) != val


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adding_ten_percent_new_images_moves_no_existing_image(seed):
    paths, labels = problem((40, 30, 20))
    before = seeded(paths, labels, 0.2, seed)
    rng = np.random.default_rng(seed)
    new_labels = rng.integers(0, 3, size=9)
    more_paths = paths + [f"c{c}/new_{i}.png" for i, c in enumerate(new_labels)]
    more_labels = np.concatenate([labels, new_labels])
    after = seeded(more_paths, more_labels, 0.2, seed)
    old = set(fake_hashes(paths))
    assert after & old == before  # no old image changed side
    # removing images moves none of the others either
    kept = [i for i in range(len(paths)) if i % 7]
    assert seeded([paths[i] for i in kept], labels[kept], 0.2, seed) == before & set(
        fake_hashes([paths[i] for i in kept])
    )


def test_a_larger_val_fraction_only_moves_images_from_train_to_val():
    paths, labels = problem((40, 40))
    assert seeded(paths, labels, 0.2) < seeded(paths, labels, 0.35)


def test_the_split_follows_content_not_path():
    paths, labels = problem((20, 20))
    hashes = fake_hashes(paths)
    renamed = [p.replace("img_", "renamed_") for p in paths]
    assert seeded(renamed, labels, 0.2, hashes=hashes) == seeded(paths, labels, 0.2, hashes=hashes)


def test_rows_without_a_hash_fall_back_to_their_path():
    paths, labels = problem((20, 20))
    hashes = fake_hashes(paths)
    blank = ["" if i % 2 else h for i, h in enumerate(hashes)]
    _, val, _ = split_indices(paths, labels, [""] * 40, 0.3, 0, hashes=blank)
    _, again, _ = split_indices(paths[::-1], labels[::-1], [""] * 40, 0.3, 0, hashes=blank[::-1])
    assert {paths[i] for i in val} == {paths[::-1][i] for i in again} and len(val) > 0


def test_train_only_split_falls_back_to_seeded_and_skips_test_rows():
    paths, labels = problem((6, 6))
    split = ["train"] * 10 + ["test"] * 2
    train, val, info = split_indices(paths, labels, split, 0.2, 0, hashes=fake_hashes(paths))
    assert info["source"] == "seeded"
    assert not {10, 11} & (set(train) | set(val))


def test_class_with_one_image_is_refused_by_name():
    paths, labels = problem((5, 1))
    with pytest.raises(TlxError, match=r"class 'bees' has 1 image: .* at least 2 per class"):
        split_indices(paths, labels, [""] * 6, hashes=fake_hashes(paths), classes=["ants", "bees"])
    with pytest.raises(TlxError, match="class 1 has 1 image") as raised:  # no names: the index, not np.int64(1)
        split_indices(paths, labels, [""] * 6, hashes=fake_hashes(paths))
    assert "np." not in str(raised.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_0_1_is_refused(fraction):
    paths, labels = problem()
    with pytest.raises(TlxError, match="between 0 and 1"):
        split_indices(paths, labels, [""] * len(labels), val_fraction=fraction, hashes=fake_hashes(paths))
