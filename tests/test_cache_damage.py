"""Damage is detected, refused in one line, reported by `tlx cache verify`, and repaired by
the next extract, which re-computes the damaged part's rows and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_folder_dataset, write_image
from synthetic_cache import commit, names_of_round

import tlx
from tlx.cache.h5format import parts_dir
from tlx.cache.index import read_index
from tlx.errors import CacheError
from tlx.extractor.extract import extract

TINY = dict(backbone="tiny_cnn", workers=0, batch_size=4)


@pytest.fixture
def two_parts(tmp_path):
    """A cache of 9 images in two parts: the first run's 6, then 3 added by a second run."""
    data = make_folder_dataset(tmp_path / "data", per_class=3)
    first = extract(data, cache_dir=tmp_path / "cache", **TINY)
    before = set(read_index(Path(first.path)).part_names)
    for i in range(3):
        write_image(data / "bees" / f"late_{i}.png", seed=70 + i)
    second = extract(data, cache_dir=tmp_path / "cache", **TINY)
    assert second.n_new == 3
    path = Path(second.path)
    [added] = set(read_index(path).part_names) - before
    return data, path, parts_dir(path) / added


def flip_a_byte_of_the_vectors(part: Path) -> None:
    with h5py.File(part, "r") as f:
        chunk = f["features"].id.get_chunk_info(0)  # where the first chunk's bytes lie in the file
    with open(part, "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))


def cut_short(part: Path) -> None:
    with open(part, "r+b") as fh:
        fh.truncate(part.stat().st_size // 2)


DAMAGE = {"flipped": flip_a_byte_of_the_vectors, "truncated": cut_short}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_one_line_verify_names_it_and_extract_recomputes_only_it(two_parts, cli, damage):
    data, path, part = two_parts
    good = tlx.load_features(path)
    good_paths, good_X = good.paths, good.X
    good.snapshot.close()  # HDF5 shares a file opened twice in one process: let go of its cached chunks
    DAMAGE[damage](part)

    with pytest.raises(CacheError) as err:
        tlx.load_features(path)
    message = str(err.value)
    assert part.name in message and "damaged" in message and "tlx extract" in message
    assert "\n" not in message and "delete" not in message

    fit = cli("fit-head", "--features", path, "--clf", "linear", "--out", path.parent / "run")
    assert fit.exit_code == 2 and part.name in fit.stderr and "Traceback" not in fit.stderr

    verify = cli("cache", "verify", path, "--json")
    assert verify.exit_code == 1
    [check] = verify.json()["caches"]
    assert check["damaged"] and [p["part"] for p in check["parts"] if p["status"] == "damaged"] == [
        f"{part.parent.name}/{part.name}"
    ]

    repaired = extract(data, cache_dir=path.parent, **TINY)
    assert (repaired.n_new, repaired.n_reused) == (3, 6)  # that part's rows, and nothing else
    assert cli("cache", "verify", path).exit_code == 0
    again = tlx.load_features(path)
    assert again.paths == good_paths
    np.testing.assert_allclose(again.X, good_X, rtol=1e-5, atol=1e-6)


def test_verify_passes_a_sound_cache_and_reads_every_chunk(two_parts, cli):
    _, path, _ = two_parts
    out = cli("cache", "verify", path.parent)
    assert out.exit_code == 0 and f"{path}: ok, 2 part(s) read" in out.stdout


def test_parts_are_written_with_checksums(two_parts):
    _, _, part = two_parts
    with h5py.File(part, "r") as f:
        assert f["features"].fletcher32 and f["content_sha256"].fletcher32


def test_parts_without_checksums_are_reported_as_such_not_as_damaged(tmp_path, cli):
    path = tmp_path / "cache" / "synthetic.h5"
    commit(path, names_of_round(0), "r000")
    [part] = parts_dir(path).glob("*.h5")
    with h5py.File(part, "r") as f:  # as an older tlx wrote it: the same data, no checksum
        arrays, attrs = {k: f[k][()] for k in f}, dict(f.attrs)
    with h5py.File(part, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v, chunks=True)
        f.attrs.update(attrs)
    out = cli("cache", "verify", path, "--json")
    assert out.exit_code == 0, out.stdout
    [check] = out.json()["caches"]
    assert [p["status"] for p in check["parts"]] == ["no checksum (written by an older tlx)"]
    assert len(tlx.load_features(path)) == len(names_of_round(0))


def test_an_index_that_maps_rows_onto_other_content_is_damaged(tmp_path, cli):
    path = tmp_path / "cache" / "synthetic.h5"
    commit(path, names_of_round(0), "r000")
    with h5py.File(path, "r+") as f:  # the index says row 0 holds another image's vector
        f["source/row"][0] = (f["source/row"][0] + 1) % len(f["source/row"])
    out = cli("cache", "verify", path)
    assert out.exit_code == 1 and "other content than the index says" in out.stdout
    assert json.loads(cli("cache", "verify", path, "--json").stdout.splitlines()[-1])["caches"][0]["damaged"]


def test_a_damaged_view_part_is_refused_named_and_its_views_recomputed(tmp_path, cli):
    data = make_folder_dataset(tmp_path / "data", per_class=2)
    made = extract(data, cache_dir=tmp_path / "cache", views=2, **TINY)
    path = Path(made.path)
    good = tlx.load_features(path).views()
    good_X = np.array(good.X)
    [part] = Path(made.path + ".views").glob("*.h5")
    flip_a_byte_of_the_vectors(part)
    with pytest.raises(CacheError, match=rf"{part.name} is damaged .*tlx extract"):
        tlx.load_features(path).views()
    out = cli("cache", "verify", path)
    assert out.exit_code == 1 and f"{part.parent.name}/{part.name}: damaged" in out.stdout
    again = extract(data, cache_dir=tmp_path / "cache", **TINY)
    assert (again.n_new, again.n_views_new) == (0, 4 * 2)  # the vectors were sound; the views are read again
    assert cli("cache", "verify", path).exit_code == 0
    np.testing.assert_allclose(np.array(tlx.load_features(path).views().X), good_X, rtol=1e-5, atol=1e-6)


def test_verify_reports_an_index_that_maps_rows_onto_parts_it_does_not_name(tmp_path, cli):
    path = tmp_path / "cache" / "c.h5"
    path.parent.mkdir()
    commit(path, names_of_round(0), "a")
    with h5py.File(path, "r+") as f:
        f["source/part"][0] = len(f["parts/names"])  # one past the last part the index names
    out = cli("cache", "verify", path)
    assert out.exit_code == 1 and "the index maps rows onto parts it does not name" in out.stdout
