"""``tlx audit``: duplicates, label errors, outliers and balance from the cache alone, and
``fit-head --exclude``. The neighbour search and the label rule are checked against brute force
and planted faults on synthetic features; the contract on tiny_cnn features of generated images;
exact and near copies and an unreadable file on a few real photos."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_dataset, write_image

from tlx.cache.features import Features
from tlx.quality import neighbors as nb
from tlx.quality.label_issues import confident_learning, grouped_folds, neighbor_vote, out_of_fold_proba
from tlx.quality.outliers import find_outliers

FAST = ["--backbone", "tiny_cnn", "--workers", "0", "--quiet"]


def blobs(n_per: int = 40, classes: int = 3, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)).astype(np.float32) * 4
    y = np.repeat(np.arange(classes), n_per)
    return centers[y] + rng.standard_normal((len(y), d)).astype(np.float32), y


def fake_features(X, y, split=None, sha=None) -> Features:
    n = len(y)
    return Features(
        np.asarray(X, np.float32),
        np.asarray(y, np.int64),
        [f"c{i}" for i in range(int(np.max(y)) + 1)],
        [f"img{i}.png" for i in range(n)],
        split or ["train"] * n,
        sha or [f"{i:064x}" for i in range(n)],
        None,  # type: ignore[arg-type]  # the audit never reads the feature space
        Path("synthetic.h5"),
    )


# -- the neighbour pass ----------------------------------------------------------------------


def test_neighbor_pass_matches_brute_force_in_blocks(monkeypatch):
    monkeypatch.setattr(nb, "BLOCK_BYTES", 4 * 200 * 7)  # 7 query rows per block
    rng = np.random.default_rng(1)
    Z = nb.unit(rng.standard_normal((200, 8)).astype(np.float32))
    Z[5] = Z[17] + 0.01
    Z = nb.unit(Z)
    same = np.full(200, -1)
    same[[3, 9]] = 0  # byte-identical copies: never neighbours nor a pair
    got = nb.neighbor_pass(Z, 4, 0.9, same)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    S[3, 9] = S[9, 3] = -np.inf
    want = np.argsort(-S, axis=1, kind="stable")[:, :4]
    assert np.allclose(np.take_along_axis(S, want, 1), got.similarity, atol=1e-5)
    i, j = np.nonzero(np.triu(S >= 0.9, 1))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(map(tuple, got.pairs.tolist()))
    assert (5, 17) in set(map(tuple, got.pairs.tolist()))
    assert 9 not in got.index[3] and 3 not in got.index[9]


def test_large_data_searches_a_projection_and_rescores_pairs_on_full_rows(monkeypatch):
    from tlx.quality import audit

    monkeypatch.setattr(nb, "EXACT_BUDGET", 0)
    monkeypatch.setattr("tlx.quality.run.SEARCH_DIMS", 8)
    monkeypatch.setattr(nb, "SEARCH_DIMS", 8)
    X, y = blobs(60, 3, 32)
    X[7] = X[100] + 0.05  # a near copy across classes
    report = audit(fake_features(X, y))
    assert report.settings["search_dims"] == 8
    pairs = [d["paths"] for d in report.near_duplicates]
    assert ["img7.png", "img100.png"] in pairs
    assert all(d["score"] >= 0.8 for d in report.near_duplicates)  # re-scored on the full rows
    assert report.near_duplicates[0]["kind"] == "across classes"


# -- label errors and outliers ---------------------------------------------------------------


def test_flipped_labels_are_flagged_first_and_copies_share_a_fold():
    X, y = blobs(40, 3)
    flipped = [2, 45, 90]
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 3
    groups = np.arange(len(y))
    groups[1] = groups[0]
    folds = grouped_folds(noisy, groups, 5)
    assert folds[0] == folds[1]
    lin, k = out_of_fold_proba(X, noisy, 3, groups)
    assert k == 10
    Z = nb.unit(X - X.mean(0))
    found = nb.neighbor_pass(Z, 10, 0.99)
    from tlx.quality.label_issues import label_issues

    issues = label_issues(noisy, lin, neighbor_vote(found.index, found.similarity, noisy, 3), k)
    assert set(issues.rows[:3].tolist()) == set(flipped)
    assert [int(s) for s in issues.suggested[:3]] == [int(y[r]) for r in issues.rows[:3]]


def test_without_cleanlab_the_confident_learning_rule_decides(monkeypatch):
    X, y = blobs(30, 2)
    noisy = y.copy()
    noisy[[0, 40]] = 1 - y[[0, 40]]
    lin, _ = out_of_fold_proba(X, noisy, 2, np.arange(len(y)))
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab.filter now fails
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    mask, method = confident_learning(noisy, lin)
    assert method.startswith("confident_learning (tlx")
    assert set(np.flatnonzero(mask).tolist()) == {0, 40}


def test_an_image_far_from_every_other_is_an_outlier():
    X, y = blobs(100, 2)
    X[13] = 40.0 * np.ones(X.shape[1])  # far from both classes
    Z = nb.unit(X - X.mean(0))
    found = nb.neighbor_pass(Z, 10, 0.99)
    outliers = find_outliers(found.similarity, fake_features(X, y))
    assert outliers[0]["path"] == "img13.png" and outliers[0]["score"] > 5
    assert len(outliers) <= 2  # at most 1% of the rows, however many pass the cut


# -- the command on tiny_cnn features ----------------------------------------------------------


@pytest.fixture
def faulty_data(tmp_path) -> Path:
    """train/val x ants/bees with byte-identical copies across splits, across classes and within
    a class, and a file that is not an image."""
    root = tmp_path / "data"
    make_folder_dataset(root / "train", per_class=6)
    make_folder_dataset(root / "val", per_class=3, seed0=100)
    shutil.copy(root / "train/ants/ants_0.png", root / "val/ants/leak.png")
    shutil.copy(root / "train/bees/bees_1.png", root / "train/ants/two-labels.png")
    shutil.copy(root / "train/ants/ants_2.png", root / "train/ants/again.png")
    (root / "train/bees/broken.png").write_text("not a picture\n")
    return root


def test_audit_command_finds_the_copies_and_writes_json_and_png(cli, faulty_data, tmp_path):
    cache = tmp_path / "cache"
    assert cli("extract", faulty_data, *FAST, "--cache-dir", cache).exit_code == 0
    res = cli("audit", "--features", cache, "--out", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.stderr
    out = res.json()
    written = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert written["exact_duplicates"] == out["exact_duplicates"]
    kinds = {d["kind"]: d["paths"] for d in out["exact_duplicates"]}
    assert kinds == {
        "across splits": ["train/ants/ants_0.png", "val/ants/leak.png"],
        "across classes": ["train/ants/two-labels.png", "train/bees/bees_1.png"],
        "within class": ["train/ants/again.png", "train/ants/ants_2.png"],
    }
    assert out["failed"][0]["path"] == "train/bees/broken.png"
    assert out["counts"] == {"train": {"ants": 8, "bees": 6}, "val": {"ants": 4, "bees": 3}}
    for issue in out["label_issues"]:
        assert set(issue) >= {"path", "given", "suggested", "score"} and issue["given"] != issue["suggested"]
    assert {"train/ants/ants_0.png", "train/ants/two-labels.png", "train/bees/bees_1.png"} <= set(out["exclude"])
    from PIL import Image

    with Image.open(tmp_path / "out" / "audit.png") as im:
        assert im.width > 0 and im.height > 0

    table = cli("audit", "--features", cache, "--out", tmp_path / "out2")
    assert table.exit_code == 0
    assert "across splits" in table.stdout and "unreadable" in table.stdout and "train: ants 8, bees 6" in table.stdout


def test_exclusions_drop_the_leaks_train_side_both_conflicting_labels_and_all_but_one_copy():
    from tlx.quality.run import AuditReport, exclusions

    def dup(kind, paths, splits):
        return {"kind": kind, "paths": paths, "splits": splits}

    report = AuditReport(
        "c.h5",
        "/data",
        ["a", "b"],
        9,
        {},
        [dup("across splits", ["train/a/1", "val/a/1"], ["train", "val"])],
        [
            dup("across classes", ["train/a/2", "train/b/2"], ["train", "train"]),
            dup("within class", ["train/a/3", "train/a/4"], ["train", "train"]),
        ],
        [{"path": "train/b/5"}],
        [{"path": "val/a/6"}],
        [],
        [],
    )
    assert exclusions(report) == ["train/a/1", "train/a/2", "train/a/4", "train/b/2", "train/b/5", "val/a/6"]


def test_fit_head_exclude_leaves_the_images_out_and_records_them(cli, faulty_data, tmp_path):
    cache = tmp_path / "cache"
    assert cli("extract", faulty_data, *FAST, "--cache-dir", cache).exit_code == 0
    listing = tmp_path / "drop.txt"
    listing.write_text("# two images\ntrain/ants/again.png\n" + str(faulty_data / "val/ants/leak.png") + "\n")
    res = cli("fit-head", "--features", cache, "--exclude", listing, "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["n_train"] == 13 and res.json()["n_val"] == 6
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["split"]["excluded"]
    assert record["paths"] == ["train/ants/again.png", "val/ants/leak.png"]
    assert (record["n_train"], record["n_val"]) == (1, 1)

    # an audit.json: its "exclude" list is what goes (tiny_cnn's random features flag too much to fit on)
    audit_json = tmp_path / "audit.json"
    audit_json.write_text(json.dumps({"tool": "tlx audit", "label_issues": [], "exclude": ["train/bees/bees_1.png"]}))
    res = cli("fit-head", "--features", cache, "--exclude", audit_json, "--out", tmp_path / "r2", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["n_train"] == 13 and res.json()["n_val"] == 7


def test_bad_input_is_one_line_and_exit_2(cli, faulty_data, tmp_path):
    cache = tmp_path / "cache"
    assert cli("extract", faulty_data, *FAST, "--cache-dir", cache).exit_code == 0
    res = cli("audit", "--features", tmp_path / "nowhere")
    assert res.exit_code == 2 and res.stderr.startswith("tlx: error: no feature cache found")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"exclude": ["elsewhere/x.png"]}))
    res = cli("fit-head", "--features", cache, "--exclude", other, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "none of the 1 images in --exclude" in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("tlx: error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr and not (tmp_path / "r").exists()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    res = cli("fit-head", "--features", cache, "--exclude", broken)
    assert res.exit_code == 2 and "is not valid JSON" in res.stderr


def test_tlx_audit_is_callable_from_python(faulty_data, tmp_path):
    import tlx
    from tlx.extractor.extract import extract
    from tlx.quality.run import audit

    path = extract(faulty_data, backbone="tiny_cnn", workers=0, cache_dir=tmp_path / "c").path
    report = tlx.audit(path)
    assert report.n_images == 21 and len(report.failed) == 1
    assert tlx.audit is audit


# -- real photos -----------------------------------------------------------------------------


@pytest.mark.real_weights
def test_real_photos_copies_reencoded_copies_and_a_broken_file(hymenoptera, tmp_path):
    from PIL import Image

    from tlx.extractor.extract import extract
    from tlx.quality import audit

    root = tmp_path / "photos"
    for split, n in (("train", 6), ("val", 3)):
        for c in ("ants", "bees"):
            (root / split / c).mkdir(parents=True)
            for f in sorted((hymenoptera / split / c).glob("*.jpg"))[:n]:
                shutil.copy(f, root / split / c / f.name)
    first = sorted((root / "train" / "ants").glob("*.jpg"))[0]
    shutil.copy(first, root / "val" / "ants" / "leak.jpg")
    bee = sorted((root / "train" / "bees").glob("*.jpg"))[0]
    with Image.open(bee) as im:
        im.convert("RGB").resize((round(im.width * 0.8), round(im.height * 0.8))).save(
            root / "train" / "bees" / "q70.jpg", quality=70
        )
    write_image(root / "train" / "ants" / "broken.jpg", size=(8, 8), fmt="JPEG")
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    report = audit(extract(root, workers=0, cache_dir=tmp_path / "c").path)
    assert [(d["kind"], d["paths"]) for d in report.exact_duplicates] == [
        ("across splits", [f"train/ants/{first.name}", "val/ants/leak.jpg"])
    ]
    near = [d["paths"] for d in report.near_duplicates]
    assert [f"train/bees/{bee.name}", "train/bees/q70.jpg"] in near
    assert len(near) == 1  # no two distinct photos reach the threshold
    assert [f["path"] for f in report.failed] == ["train/ants/broken.jpg"]


def test_principal_basis_spans_the_top_directions():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 40)).astype(np.float32) * np.linspace(10, 0.1, 40).astype(np.float32)
    basis = nb.principal_basis(X, np.zeros(40, np.float32), 5)
    Z = nb.normalize_rows(X, np.zeros(40, np.float32))
    _, vectors = np.linalg.eigh(Z.T.astype(np.float64) @ Z)
    top = vectors[:, ::-1][:, :5]
    assert np.allclose(np.abs(basis.T @ top).max(axis=1), 1.0, atol=1e-3)


def test_clustered_neighbors_find_most_of_the_exact_ones_and_every_near_copy():
    X, _ = blobs(300, 4, 16)
    X[11] = X[900] + 0.01
    Z = nb.unit(X - X.mean(0))
    same = np.full(len(Z), -1)
    same[[5, 6]] = 0
    got = nb.clustered_neighbors(Z, 10, same)
    exact = nb.neighbor_pass(Z, 10, np.inf, same)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.index, exact.index, strict=True)])
    assert recall > 0.9
    assert got.index[11, 0] == 900 and got.index[900, 0] == 11
    assert 6 not in got.index[5] and 5 not in got.index[6]  # byte-identical copies are not neighbours
    assert not (got.index == np.arange(len(Z))[:, None]).any()  # nor is a row its own
    assert (11, 900) in set(map(tuple, nb.candidate_pairs(got.index).tolist()))
