"""Data read exactly as it lies on disk: each real file is one row, labelled by the class folder
it really sits in; only tlx's own output (by tlx's own markers) is skipped; FIFOs are never
opened; names that are not UTF-8 round-trip through the cache."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from conftest import backdate, make_folder_dataset, write_image

from tlx.extractor.discovery import discover, tlx_output_kind


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


def _extract(cli, data, *more):
    result = cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--json", *more)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.json()


def test_a_link_back_to_the_data_counts_no_image_twice(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    (data / "ants" / "loop").symlink_to("..")
    index = discover(data)
    assert len(index.items) == 6 and index.classes == ["ants", "bees"]
    assert any("ants/loop" in note for note in index.notes), index.notes


def test_a_class_folder_linked_to_another_class_is_not_a_class(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    (data / "wasps").symlink_to("bees")
    index = discover(data)
    assert index.classes == ["ants", "bees"] and len(index.items) == 6
    assert any("wasps/" in note and "bees/" in note for note in index.notes), index.notes


def test_a_link_to_a_file_of_the_data_is_that_file(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    (data / "ants" / "twin.png").symlink_to(data / "bees" / "bees_0.png")
    os.link(data / "bees" / "bees_1.png", data / "bees" / "hard.png")
    index = discover(data)
    rows = {it.relpath: it.label for it in index.items}
    assert len(rows) == 6 and rows["bees/bees_0.png"] == "bees" and rows["bees/bees_1.png"] == "bees", rows
    assert any("ants/twin.png" in note and "bees/hard.png" in note for note in index.notes), index.notes


def test_a_folder_outside_the_data_is_followed_and_labelled_by_its_link(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    elsewhere = make_folder_dataset(tmp_path / "disk2", classes=("more",), per_class=2, seed0=50)
    (data / "ants" / "extra").symlink_to(elsewhere / "more")
    (data / "ants" / "extra-again").symlink_to(elsewhere / "more")  # the same folder twice: its files once
    (elsewhere / "more" / "back").symlink_to(elsewhere)  # a loop outside the data ends too
    index = discover(data)
    ants = sorted(it.relpath for it in index.items if it.label == "ants")
    linked = ["ants/extra/more_0.png", "ants/extra/more_1.png"]
    assert ants == ["ants/ants_0.png", "ants/ants_1.png", "ants/ants_2.png", *linked], ants


def test_stray_look_alikes_of_tlx_output_do_not_drop_a_class(cli, tmp_path):
    """Issue 17: `printf x > data/wasps/annotations.h5` made wasps tlx output, and the next
    extract removed its rows."""
    data = make_folder_dataset(tmp_path / "data", classes=("ants", "bees", "wasps"))
    first = _extract(cli, data)
    assert first["n_images"] == 9
    (data / "wasps" / "annotations.h5").write_bytes(b"x")
    (data / "bees" / "metrics.json").write_text('{"kind": "head"}')  # no head.json beside it: not a run
    (data / "ants" / "head.json").write_text("{}")
    again = _extract(cli, data)
    assert again["n_images"] == 9 and again["n_removed"] == 0, again
    assert tlx_output_kind(data / "wasps") is None


def test_a_real_run_folder_inside_the_data_is_skipped_loudly_when_it_holds_photos(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    _extract(cli, data)
    assert cli("fit-head", "--clf", "linear", "--out", data / "myrun", "--quiet").exit_code == 0
    assert tlx_output_kind(data / "myrun") == "run"
    index = discover(data)
    assert index.classes == ["ants", "bees"]
    assert any("myrun/" in n and "tlx's own output" in n for n in index.notes), index.notes
    write_image(data / "myrun" / "holiday.jpg", seed=60, fmt="JPEG")
    index = discover(data)
    assert any(n.startswith("warning: ignored myrun/") and "holiday.jpg" in n for n in index.notes), index.notes


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_with_an_image_name_is_never_opened(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    os.mkfifo(data / "ants" / "pipe.jpg")
    # Should anything open the FIFO for reading, this writer frees it, and the test fails on the count.
    index = discover(data)
    assert len(index.items) == 6 and any("pipe.jpg" in n and "FIFO" in n for n in index.notes), index.notes
    done = threading.Event()
    result: dict = {}

    def run():
        result["out"] = _extract(cli, data)
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    if not done.wait(60):
        with open(data / "ants" / "pipe.jpg", "wb"):
            pass  # unblock a reader, so the test ends and fails
    worker.join()
    assert done.is_set() and result["out"]["n_images"] == 6


def test_a_fifo_in_a_manifest_is_a_failure_not_a_hang(tmp_path):
    from tlx.extractor.reading import HashedImageFiles

    os.mkfifo(tmp_path / "pipe.jpg")
    _, image, reason, _, _ = HashedImageFiles([str(tmp_path / "pipe.jpg")], resize_crop=None)[0]
    assert image is None and "FIFO" in reason


def test_class_names_that_differ_only_in_case_are_reported(tmp_path):
    data = make_folder_dataset(tmp_path / "data", classes=("Ants", "ants", "bees"))
    index = discover(data)
    assert index.classes == ["Ants", "ants", "bees"]
    assert any("differ only in case" in n and "Ants/ants" in n for n in index.notes), index.notes


def test_names_that_are_not_utf8_round_trip_through_extract_fit_and_predict(cli, tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    odd = os.fsencode(data / "ants") + b"/caf\xe9-" + b"n" * 200 + b".png"
    os.rename(os.fsencode(data / "ants" / "ants_0.png"), odd)
    backdate(data)  # older than the racy window: the second run then trusts every stat
    name = os.fsdecode(odd)
    first = _extract(cli, data)
    assert first["n_images"] == 8 and first["n_failed"] == 0, first
    again = _extract(cli, data)
    assert again["n_reused"] == 8 and again["n_new"] == 0 and not again["written"], again

    from tlx.cache.index import read_index

    paths = read_index(Path(first["path"])).paths
    assert os.path.relpath(name, data) in paths
    assert cli("fit-head", "--clf", "linear", "--out", tmp_path / "run", "--quiet").exit_code == 0
    out = tmp_path / "preds.csv"
    result = cli("predict", data / "ants", "--run", tmp_path / "run", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    record = result.json()
    assert record["n_images"] == 4 and record["n_reused"] == 4 and record["n_failed"] == 0, record
    assert "caf\\xe9-nnn" in out.read_text(encoding="utf-8")


def test_the_run_record_of_a_skipped_folder_is_read_by_json(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"kind": "finetune"}))
    (run / "finetune.json").write_text("{}")
    assert tlx_output_kind(run) == "run"
    (run / "metrics.json").write_text(json.dumps({"kind": "other"}))
    assert tlx_output_kind(run) is None


def test_a_run_inside_a_class_folder_is_skipped_and_its_photos_reported(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    run = data / "ants" / "old-run"
    run.mkdir()
    (run / "metrics.json").write_text('{"kind": "head"}')
    (run / "head.json").write_text("{}")
    write_image(run / "confusion.png", seed=70)  # its own plot: not data, not a warning
    index = discover(data)
    assert len(index.items) == 6
    assert any(n.startswith("ignored ants/old-run/: a tlx run folder") for n in index.notes), index.notes
    write_image(run / "photo.jpg", seed=71, fmt="JPEG")
    index = discover(data)
    assert len(index.items) == 6
    assert any(n.startswith("warning: ignored ants/old-run/") and "photo.jpg" in n for n in index.notes), index.notes


def test_a_damaged_run_among_runs_is_still_tlx_output(tmp_path):
    data = make_folder_dataset(tmp_path / "data")
    for name, record in (("good", '{"kind": "head"}'), ("cut", '{"kind": "he')):
        run = data / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(record)
        (run / "head.json").write_text("{}")
        write_image(run / "confusion.png", seed=80)
    index = discover(data)
    assert index.classes == ["ants", "bees"] and len(index.items) == 6
    assert tlx_output_kind(data / "runs") == "runs"
