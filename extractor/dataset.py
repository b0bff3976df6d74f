"""Finding the images of a dataset: class folders, split folders, or a CSV manifest.

Nothing here decodes an image; it only decides which files belong to the dataset and
with which label and split. Hidden files and files without an image extension are not
part of a dataset (they are ignored, not failures).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from tlx.errors import DatasetError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".dib"}
)
# Folder names that mark the split layout DATA/<split>/<class>/<image>, and their canonical name.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}

LAYOUT_HELP = (
    "expected an image folder DATA/<class>/<image>, a split folder DATA/train/<class>/<image> + "
    "DATA/val/<class>/<image>, or a CSV manifest with columns path,label[,split]"
)


@dataclass(frozen=True)
class Item:
    relpath: str  # relative to the dataset root (absolute when a manifest points outside it)
    label: str
    split: str  # "" when the data has no split of its own


@dataclass
class DatasetIndex:
    root: Path
    name: str
    layout: str  # "folder", "split" or "csv"
    items: list[Item]
    classes: list[str]

    def abspath(self, item: Item) -> Path:
        return self.root / item.relpath

    @property
    def splits(self) -> list[str]:
        return sorted({it.split for it in self.items if it.split})


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), skipping hidden files and folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(f))
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folder_items(root: Path, folder: Path, split: str) -> list[Item]:
    items = []
    for class_dir in _subdirs(folder):
        for path in walk_images(class_dir):
            items.append(Item(path.relative_to(root).as_posix(), class_dir.name, split))
    return items


def _from_folders(root: Path) -> tuple[str, list[Item]]:
    subdirs = _subdirs(root)
    is_split_layout = (
        bool(subdirs) and all(d.name.lower() in SPLIT_ALIASES for d in subdirs) and all(_subdirs(d) for d in subdirs)
    )
    if is_split_layout:
        items = []
        for split_dir in subdirs:
            items += _class_folder_items(root, split_dir, SPLIT_ALIASES[split_dir.name.lower()])
        return "split", items
    return "folder", _class_folder_items(root, root, "")


def _from_manifest(csv_path: Path) -> list[Item]:
    root = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in columns or "label" not in columns:
            raise DatasetError(f"{csv_path} has columns {columns or 'none'}: expected a header with path,label[,split]")
        reader.fieldnames = columns
        items = []
        for line_no, row in enumerate(reader, start=2):
            path, label, split = (
                (row.get("path") or "").strip(),
                (row.get("label") or "").strip(),
                (row.get("split") or "").strip(),
            )
            if not path or not label:
                raise DatasetError(f"{csv_path} line {line_no}: empty path or label; every row needs both")
            p = Path(path)
            if not p.is_absolute():
                p = root / p
            try:
                rel = p.relative_to(root).as_posix()
            except ValueError:
                rel = p.as_posix()
            items.append(Item(rel, label, SPLIT_ALIASES.get(split.lower(), split)))
    return items


def discover(data: str | os.PathLike) -> DatasetIndex:
    """Index a dataset without decoding anything. Raises :class:`DatasetError` for bad input."""
    data = Path(data).expanduser()
    if not data.exists():
        raise DatasetError(f"{data} does not exist: {LAYOUT_HELP}")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DatasetError(f"{data} is a file but not a .csv manifest: {LAYOUT_HELP}")
        root, layout, items = data.parent.resolve(), "csv", _from_manifest(data)
        name = data.stem
    else:
        root = data.resolve()
        layout, items = _from_folders(root)
        name = root.name
    if not items:
        raise DatasetError(
            f"no images found in {data}: {LAYOUT_HELP} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    # One order everywhere (cache rows, splits, fine-tuning): sorted by path.
    items.sort(key=lambda it: it.relpath)
    seen = set()
    for it in items:
        if it.relpath in seen:
            raise DatasetError(f"{it.relpath} is listed twice in {data}; each image may appear once")
        seen.add(it.relpath)
    classes = sorted({it.label for it in items})
    if len(classes) < 2:
        raise DatasetError(
            f"{data} has a single class {classes[0]!r} ({len(items)} images): a classifier needs at least two class folders or labels"
        )
    return DatasetIndex(root, name, layout, items, classes)
