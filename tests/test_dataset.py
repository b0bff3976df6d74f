"""Finding a dataset's images: class folders, split folders, CSV manifests."""

from __future__ import annotations

import pytest
from conftest import make_folder_dataset, write_image

from tlx.errors import DatasetError
from tlx.extractor.discovery import discover


def test_class_folders(tmp_path):
    data = make_folder_dataset(tmp_path / "flowers", classes=("roses", "daisy"), per_class=2)
    index = discover(data)
    assert index.layout == "folder" and index.name == "flowers"
    assert index.classes == ["daisy", "roses"]
    assert [it.relpath for it in index.items] == [
        "daisy/daisy_0.png",
        "daisy/daisy_1.png",
        "roses/roses_0.png",
        "roses/roses_1.png",
    ]
    assert [it.label for it in index.items] == ["daisy", "daisy", "roses", "roses"]
    assert index.splits == [] and all(it.split == "" for it in index.items)


def test_images_in_nested_folders_belong_to_the_top_class(tmp_path):
    data = make_folder_dataset(tmp_path / "d", per_class=1)
    write_image(data / "ants" / "sub" / "deep.png", seed=9)
    index = discover(data)
    assert ("ants/sub/deep.png", "ants") in [(it.relpath, it.label) for it in index.items]


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_split_layout(tmp_path, val_name):
    data = tmp_path / "hym"
    make_folder_dataset(data / "train", per_class=2)
    make_folder_dataset(data / val_name, per_class=1, seed0=10)
    index = discover(data)
    assert index.layout == "split"
    assert index.classes == ["ants", "bees"]
    assert index.splits == ["train", "val"]
    by_split = {s: [it for it in index.items if it.split == s] for s in index.splits}
    assert len(by_split["train"]) == 4 and len(by_split["val"]) == 2
    assert all(it.relpath.startswith(f"{val_name}/") for it in by_split["val"])


def test_folder_named_like_a_split_among_classes_is_a_class(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=("train", "cats"), per_class=1)
    index = discover(data)
    assert index.layout == "folder" and index.classes == ["cats", "train"]


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    data = make_folder_dataset(tmp_path / "d", per_class=2)
    write_image(data / "ants" / ".hidden.png", seed=5)
    write_image(data / ".thumbs" / "x.png", seed=6)  # hidden class folder
    write_image(data / "bees" / ".cache" / "y.png", seed=7)  # hidden sub-folder
    (data / "ants" / "notes.txt").write_text("not an image")
    (data / "ants" / "Thumbs.db").write_bytes(b"\0" * 10)
    (data / "bees" / "README").write_text("no extension")
    (data / "LICENSE.md").write_text("top-level file")
    index = discover(data)
    assert index.classes == ["ants", "bees"]
    assert sorted(it.relpath for it in index.items) == [
        "ants/ants_0.png",
        "ants/ants_1.png",
        "bees/bees_0.png",
        "bees/bees_1.png",
    ]


@pytest.mark.parametrize("ext", [".JPG", ".Jpeg", ".PNG", ".webp", ".TIF", ".tiff", ".Bmp", ".GIF", ".jpe"])
def test_extensions_in_any_letter_case(tmp_path, ext):
    data = make_folder_dataset(tmp_path / "d", per_class=1)
    fmt = {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".jpe": "JPEG",
        ".png": "PNG",
        ".webp": "WEBP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".bmp": "BMP",
        ".gif": "GIF",
    }[ext.lower()]
    write_image(data / "ants" / f"odd{ext}", seed=3, fmt=fmt)
    assert f"ants/odd{ext}" in [it.relpath for it in discover(data).items]


def _manifest(tmp_path, text: str):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_csv_manifest_relative_and_absolute_paths(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", seed=1)
    write_image(tmp_path / "imgs" / "b.png", seed=2)
    outside = write_image(tmp_path.parent / f"{tmp_path.name}_outside" / "c.png", seed=3)
    inside_abs = tmp_path / "imgs" / "b.png"
    path = _manifest(tmp_path, f"path,label,split\nimgs/a.png,cat,train\n{inside_abs},dog,valid\n{outside},dog,train\n")
    index = discover(path)
    assert index.layout == "csv" and index.name == "manifest" and index.root == tmp_path.resolve()
    got = {it.relpath: (it.label, it.split) for it in index.items}
    assert got["imgs/a.png"] == ("cat", "train")
    assert got["imgs/b.png"] == ("dog", "val")  # absolute inside the root becomes relative; 'valid' -> val
    assert got[outside.as_posix()] == ("dog", "train")  # outside the root stays absolute
    assert all(index.abspath(it).is_file() for it in index.items)
    assert index.classes == ["cat", "dog"] and index.splits == ["train", "val"]


def test_csv_manifest_without_split_and_with_extra_columns(tmp_path):
    write_image(tmp_path / "a.png", seed=1)
    write_image(tmp_path / "b.png", seed=2)
    index = discover(_manifest(tmp_path, "Label, Path ,source\ncat,a.png,web\ndog,b.png,web\n"))
    assert [(it.relpath, it.label, it.split) for it in index.items] == [("a.png", "cat", ""), ("b.png", "dog", "")]


@pytest.mark.parametrize(
    "text,match",
    [
        ("file,label\na.png,cat\n", "expected a header with path,label"),
        ("path,class\na.png,cat\n", "expected a header with path,label"),
        ("", "expected a header with path,label"),
        ("path,label\na.png,\n", "line 2"),
        ("path,label\na.png,cat\na.png,dog\n", "listed twice"),
    ],
)
def test_bad_manifest(tmp_path, text, match):
    write_image(tmp_path / "a.png", seed=1)
    with pytest.raises(DatasetError, match=match):
        discover(_manifest(tmp_path, text))


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "ants").mkdir(parents=True)
    (tmp_path / "empty" / "ants" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images found"):
        discover(tmp_path / "empty")


def test_single_class(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=("ants",), per_class=2)
    with pytest.raises(DatasetError, match="single class 'ants'"):
        discover(data)


def test_a_file_that_is_not_a_manifest(tmp_path):
    path = write_image(tmp_path / "a.png", seed=1)
    with pytest.raises(DatasetError, match=r"not a \.csv manifest"):
        discover(path)


def test_real_split_layout(hymenoptera):
    index = discover(hymenoptera)
    counts = {
        (s, c): sum(1 for it in index.items if it.split == s and it.label == c)
        for s in ("train", "val")
        for c in ("ants", "bees")
    }
    assert index.layout == "split" and index.classes == ["ants", "bees"]
    assert counts == {("train", "ants"): 123, ("train", "bees"): 121, ("val", "ants"): 70, ("val", "bees"): 83}


# --------------------------------------------------------------------------- layout never guessed


def _split_data(root):
    make_folder_dataset(root / "train", per_class=2)
    make_folder_dataset(root / "val", per_class=1, seed0=10)
    return root


@pytest.mark.parametrize(
    "extra,ignored",
    [
        (lambda d: write_image(d / "test" / "unlabeled1.jpg", seed=20, fmt="JPEG"), "test/"),
        (lambda d: write_image(d / "notes" / "sketch.png", seed=21), "notes/"),
        (lambda d: write_image(d / "loose.png", seed=22), "loose"),
    ],
    ids=["unlabeled-test-folder", "extra-folder", "top-level-image"],
)
def test_split_layout_with_stray_entries_reports_them(tmp_path, extra, ignored):
    data = _split_data(tmp_path / "hym")
    extra(data)
    index = discover(data)
    assert index.layout == "split"
    assert index.classes == ["ants", "bees"] and index.splits == ["train", "val"]
    assert len(index.items) == 6
    assert any(ignored in note for note in index.notes), index.notes


def test_split_folder_with_loose_images_beside_its_class_folders(tmp_path):
    data = _split_data(tmp_path / "hym")
    write_image(data / "val" / "stray.png", seed=30)
    index = discover(data)
    assert "val/stray.png" not in [it.relpath for it in index.items]
    assert any("val/" in note and "1 image" in note for note in index.notes), index.notes


def test_images_without_class_folders_say_so(tmp_path):
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.png", seed=i)
    with pytest.raises(DatasetError, match="3 images are not inside class folders"):
        discover(tmp_path / "flat")


def test_split_folders_holding_images_directly_are_refused(tmp_path):
    write_image(tmp_path / "d" / "train" / "a.png", seed=1)
    write_image(tmp_path / "d" / "val" / "b.png", seed=2)
    with pytest.raises(DatasetError, match=r"split folders train/, val/.*class folders"):
        discover(tmp_path / "d")


def _tlx_index(path):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["tlx_format"] = 2
    return path


@pytest.mark.parametrize("layout", ["folder", "split"])
def test_tlx_output_inside_the_data_is_not_data(tmp_path, layout):
    data = _split_data(tmp_path / "d") if layout == "split" else make_folder_dataset(tmp_path / "d")
    # tlx's own markers (tests/test_data_on_disk.py: stray look-alikes do not count)
    write_image(data / "runs" / "20240101-000000-linear" / "confusion.png", seed=40)
    (data / "runs" / "20240101-000000-linear" / "metrics.json").write_text('{"kind": "head"}')
    (data / "runs" / "20240101-000000-linear" / "head.json").write_text("{}")
    _tlx_index(data / "cache" / "d-tiny_cnn-avg-0123456789.h5")
    write_image(data / "cache" / "d-tiny_cnn-avg-0123456789.h5.journal" / "x.png", seed=41)
    write_image(data / "tlx-demo" / "digits" / "train" / "0" / "0.png", seed=42)
    _tlx_index(data / "tlx-demo" / "cache" / "digits.h5")
    (data / "tlx-demo" / "cache" / "digits.h5.lock").write_text("")
    index = discover(data)
    assert index.layout == layout and index.classes == ["ants", "bees"]
    assert not [it for it in index.items if it.relpath.split("/")[0] in ("runs", "cache", "tlx-demo")]
    for name in ("runs/", "cache/", "tlx-demo/"):
        assert any(name in note for note in index.notes), index.notes


def test_manifest_that_is_not_utf8_names_the_line(tmp_path):
    write_image(tmp_path / "a.png", seed=1)
    write_image(tmp_path / "b.png", seed=2)
    (tmp_path / "m.csv").write_bytes(b"path,label\na.png,cat\nb.png,caf\xe9\n")
    with pytest.raises(DatasetError, match=r"m.csv line 3 is not UTF-8"):
        discover(tmp_path / "m.csv")


def test_manifest_with_an_unknown_split_is_refused(tmp_path):
    write_image(tmp_path / "a.png", seed=1)
    write_image(tmp_path / "b.png", seed=2)
    with pytest.raises(DatasetError, match=r"line 3: unknown split 'trian'.*train, val, test"):
        discover(_manifest(tmp_path, "path,label,split\na.png,cat,train\nb.png,dog,trian\n"))
