"""Finding the images of a dataset: class folders, split folders, or a CSV manifest.

Nothing here decodes an image; it only decides which files belong to the dataset and
with which label and split. Hidden files and files without an image extension are not
part of a dataset (they are ignored, not failures).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError

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
    notes: list[str] = field(default_factory=list)  # what was found but is not data, for the user to see

    def abspath(self, item: Item) -> Path:
        return self.root / item.relpath

    @property
    def splits(self) -> list[str]:
        return sorted({it.split for it in self.items if it.split})


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), skipping hidden files and folders.

    Links to folders are followed, but each real folder is entered once (keyed by device and
    inode): a link back to a parent would otherwise make the walk endless, and two links to one
    folder would list its images twice."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []  # already walked under another name: neither its files nor its folders again
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(f))
    return found


# Files that mark a folder as tlx's own output: feature caches with their locks and journals
# (extractor/store.py), and run folders (common/runfolder.py, heads/io.py, finetune/).
_OUTPUT_SUFFIXES = (".h5", ".h5.lock", ".h5.journal", ".h5.parts")
_RUN_FILES = frozenset({"metrics.json", "head.json", "finetune.json", "last.pt", "best.pt"})


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p.name))


def _holds_tlx_output(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n in _RUN_FILES or n.endswith(_OUTPUT_SUFFIXES) for n in names)


def is_tlx_output(folder: Path) -> bool:
    """A cache folder, a run folder, a folder of runs, or a demo folder (which holds a cache
    folder): `tlx extract .` run where `tlx fit-head` wrote `runs/` must not make it a class."""
    return _holds_tlx_output(folder) or any(_holds_tlx_output(d) for d in _subdirs(folder))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _some_names(paths: list[Path], shown: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:shown])
    return f"{names}, ..." if len(paths) > shown else names


def _data_subdirs(folder: Path, root: Path, notes: list[str]) -> list[Path]:
    """Sub-folders that may hold data; tlx's own output is left out, and said so."""
    keep = []
    for d in _subdirs(folder):
        if is_tlx_output(d):
            notes.append(
                f"ignored {d.relative_to(root).as_posix()}/: tlx's own output (feature caches or runs), not data"
            )
        else:
            keep.append(d)
    return keep


def _class_folder_items(root: Path, folder: Path, split: str, notes: list[str]) -> list[Item]:
    items = []
    for class_dir in _data_subdirs(folder, root, notes):
        for path in walk_images(class_dir):
            items.append(Item(path.relative_to(root).as_posix(), class_dir.name, split))
    loose = _loose_images(folder)
    if loose and folder != root:
        rel = folder.relative_to(root).as_posix()
        notes.append(
            f"ignored {_plural(len(loose), 'image')} directly in {rel}/ ({_some_names(loose)}): "
            "not inside a class folder"
        )
    return items


def _from_split_folders(root: Path, split_dirs: list[Path], others: list[Path], notes: list[str]) -> list[Item]:
    items = []
    for split_dir in split_dirs:
        items += _class_folder_items(root, split_dir, SPLIT_ALIASES[split_dir.name.lower()], notes)
    for d in others:
        n = len(walk_images(d))
        why = "a split folder without class folders" if d.name.lower() in SPLIT_ALIASES else "not a split folder"
        notes.append(f"ignored {d.name}/ ({_plural(n, 'image')}): {why}; expected DATA/<split>/<class>/<image>")
    return items


def _from_folders(root: Path) -> tuple[str, list[Item], list[str]]:
    """The split layout when split folders with class folders are there, else class folders.
    Nothing else is turned into a class: stray entries are reported in the notes."""
    notes: list[str] = []
    subdirs = _data_subdirs(root, root, notes)
    loose = _loose_images(root)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES and _subdirs(d)]
    if split_dirs:
        items = _from_split_folders(root, split_dirs, [d for d in subdirs if d not in split_dirs], notes)
        if loose:
            notes.append(
                f"ignored {_plural(len(loose), 'image')} directly in the data folder ({_some_names(loose)}): "
                "not inside a split folder"
            )
        return "split", items, notes
    items = _class_folder_items(root, root, "", notes)
    if loose and not items:
        are = "is" if len(loose) == 1 else "are"
        raise DatasetError(f"{root}: {_plural(len(loose), 'image')} {are} not inside class folders; {LAYOUT_HELP}")
    if loose:
        notes.append(
            f"ignored {_plural(len(loose), 'image')} directly in the data folder ({_some_names(loose)}): "
            "not inside a class folder"
        )
    labels = sorted({it.label for it in items})
    if labels and all(label.lower() in SPLIT_ALIASES for label in labels):
        found = ", ".join(f"{label}/" for label in labels)
        raise DatasetError(
            f"{root} has split folders {found} holding images directly, not class folders: {LAYOUT_HELP}"
        )
    return "folder", items, notes


def _read_manifest_text(csv_path: Path) -> str:
    raw = csv_path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{csv_path} line {line_no} is not UTF-8 text (byte {raw[exc.start]:#04x}): save the manifest as UTF-8"
        ) from None


def _manifest_split(csv_path: Path, line_no: int, value: str) -> str:
    if not value:
        return ""
    try:
        return SPLIT_ALIASES[value.lower()]
    except KeyError:
        aliases = ", ".join(a for a in SPLIT_ALIASES if SPLIT_ALIASES[a] != a)
        raise DatasetError(
            f"{csv_path} line {line_no}: unknown split {value!r}: "
            f"expected train, val, test ({aliases} also accepted) or empty"
        ) from None


def _from_manifest(csv_path: Path) -> list[Item]:
    root = csv_path.parent
    reader = csv.DictReader(io.StringIO(_read_manifest_text(csv_path), newline=""))
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
        items.append(Item(rel, label, _manifest_split(csv_path, line_no, split)))
    return items


def discover(data: str | os.PathLike) -> DatasetIndex:
    """Index a dataset without decoding anything. Raises :class:`DatasetError` for bad input."""
    data = Path(data).expanduser()
    if not data.exists():
        raise DatasetError(f"{data} does not exist: {LAYOUT_HELP}")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DatasetError(f"{data} is a file but not a .csv manifest: {LAYOUT_HELP}")
        notes: list[str] = []
        root, layout, items = data.parent.resolve(), "csv", _from_manifest(data)
        name = data.stem
    else:
        root = data.resolve()
        layout, items, notes = _from_folders(root)
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
            f"{data} has a single class {classes[0]!r} ({len(items)} images): "
            "a classifier needs at least two class folders or labels"
        )
    return DatasetIndex(root, name, layout, items, classes, notes)
