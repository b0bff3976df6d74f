"""Finding the images of a dataset (class folders, split folders, or a CSV manifest) and their
label and split, without decoding any. Hidden files and other extensions are not data."""

from __future__ import annotations

import csv
import io
import itertools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..common.outputs import CACHE_SUFFIXES, HDF5_SIGNATURE, IMAGE_SUFFIXES, is_run_folder
from ..errors import DatasetError

IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES)
SPLITS = ("train", "val", "test")
# Folder names that mark the split layout DATA/<split>/<class>/<image>, and their canonical name.
SPLIT_ALIASES = {**{split: split for split in SPLITS}, "training": "train", "valid": "val", "validation": "val"}

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


def not_regular(path: str | os.PathLike) -> str:
    """Why ``path`` must not be opened as an image ('' when it may): ``open`` on a FIFO blocks
    until a writer comes, and a device or socket is no image either. Missing files are left to
    the reader, which reports them in its own words."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({what}): skipped without opening it"


def walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), each real file once (see :class:`_Walker`)."""
    walker = _Walker(Path(folder).resolve(), [])
    return [Path(p) for p in sorted({c.path for c in walker.walk(Path(folder))})]


@dataclass(frozen=True)
class _Found:
    path: str  # as reached from the data root (through links that leave it, if any)
    key: tuple[int, int]  # (device, inode) of the real file: a file reached twice is one file
    via_link: bool  # reached through a symbolic link


Found = list[tuple[Item, _Found]]  # what a walk found, labelled, before one row per real file is kept


class _Walker:
    """Walks folders as they lie on disk. Each real folder is entered once (device, inode), so
    loops end. A link to a folder inside the data root is not followed (its images count where
    they sit); one outside it is (data spread over disks, linked into one tree). FIFOs, devices
    and sockets are never opened (``open`` on a FIFO blocks); tlx's own output is skipped. Both
    are reported."""

    def __init__(self, root: Path, notes: list[str]):
        self.root, self.notes = root, notes
        self.prefix = str(root).rstrip(os.sep) + os.sep  # strings, not Paths: a walk may meet millions of files
        self.seen: set[tuple[int, int]] = set()
        self.not_regular: list[str] = []
        self.inner_links: list[str] = []

    def rel(self, path: str | Path) -> str:
        text = str(path)
        return "." if text == str(self.root) else text.removeprefix(self.prefix).replace(os.sep, "/")

    def class_dirs(self, folder: Path) -> list[Path]:
        """Sub-folders that may hold data, leaving out (and saying so) tlx's own output and links to
        another folder of the data (its images are read once, where they really sit)."""
        kept: dict[str, Path] = {}  # real path -> the first sub-folder reaching it
        for d in _subdirs(folder):
            kind = tlx_output_kind(d)
            real = os.path.realpath(d)
            if kind is not None:
                self.notes.append(_skipped_output(self.rel(d), d, kind))
            elif d.is_symlink() and real.startswith(self.prefix):
                self.notes.append(
                    f"ignored {self.rel(d)}/: a link to {self.rel(real)}/ inside the data, not a class "
                    "of its own (its images count once, where they are)"
                )
            elif real in kept:
                self.notes.append(
                    f"ignored {self.rel(d)}/: the same folder as {self.rel(kept[real])}/ (a link), "
                    "not a class of its own"
                )
            else:
                kept[real] = d
        return list(kept.values())

    def labelled(self, class_dirs: list[Path], split: str) -> Found:
        return [(Item(self.rel(f.path), d.name, split), f) for d in class_dirs for f in self.walk(d)]

    def walk(self, folder: Path) -> list[_Found]:
        found: list[_Found] = []
        stack = [str(folder)]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in self.seen:
                continue
            self.seen.add((st.st_dev, st.st_ino))
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as exc:
                self.notes.append(f"warning: cannot list {self.rel(d)}/ ({exc.strerror}): its images are not read")
                continue
            below: list[str] = []
            for entry in entries:
                if not entry.name.startswith("."):
                    self._entry(entry, st.st_dev, found, below)
            stack.extend(reversed(below))  # depth first, in name order: the first name reaching a folder keeps it
        return found

    def _entry(self, entry: os.DirEntry, dev: int, found: list[_Found], stack: list[str]) -> None:
        path = entry.path
        if entry.is_symlink():
            self._link(entry, path, found, stack)
        elif entry.is_dir(follow_symlinks=False):
            kind = tlx_output_kind(Path(path))
            if kind is None:
                stack.append(path)
            else:
                self.notes.append(_skipped_output(self.rel(path), Path(path), kind))
        elif is_image_file(entry.name):
            if entry.is_file(follow_symlinks=False):
                found.append(_Found(path, (dev, entry.inode()), False))
            else:
                self.not_regular.append(self.rel(path))

    def _link(self, entry: os.DirEntry, path: str, found: list[_Found], stack: list[str]) -> None:
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError:  # a dangling link to an image: listed, so that extract reports it unreadable
            if is_image_file(entry.name):
                found.append(_Found(path, (-1, hash(path)), True))
            return
        if stat.S_ISDIR(st.st_mode):
            if real == str(self.root) or real.startswith(self.prefix):
                self.inner_links.append(f"{self.rel(path)} -> {self.rel(real)}/")
            else:
                stack.append(path)
        elif is_image_file(entry.name):
            if stat.S_ISREG(st.st_mode):
                found.append(_Found(path, (st.st_dev, st.st_ino), True))
            else:
                self.not_regular.append(self.rel(path))

    def report(self) -> None:
        if self.not_regular:
            self.notes.append(
                f"warning: skipped {_plural(len(self.not_regular), 'entry')} with an image name that "
                f"{'is' if len(self.not_regular) == 1 else 'are'} not a regular file (a FIFO, device or socket; "
                f"not opened): {_listing(self.not_regular)}"
            )
        if self.inner_links:
            self.notes.append(
                f"ignored {_plural(len(self.inner_links), 'link')} to folders inside the data (their images "
                f"count once, where they are): {_listing(self.inner_links)}"
            )


# tlx's own output, recognised by tlx's own markers only: a stray ``x.h5`` or ``metrics.json``
# in a class folder does not make it output (it stays a class, and its rows stay in the cache).
_OUTPUT_WORDS = {
    "run": "a tlx run folder",
    "runs": "a folder of tlx runs",
    "cache": "a tlx feature cache folder",
    "demo": "a tlx demo folder",
    "cache-part": "a tlx cache's part folder",
}
_PLOTS = frozenset({"confusion.png", "top_losses.png", "sweep.png", "learning_curve.png"})


def is_tlx_cache_index(path: Path) -> bool:
    """An HDF5 file carrying tlx's ``tlx_format`` attribute (a cache index, or one of its parts)."""
    if not path.name.endswith(".h5") or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                return False
        from ..cache.h5format import read_attrs

        return bool({"tlx_format", "feature_space"} & set(read_attrs(path)))
    except (OSError, ValueError):
        return False


def _names(folder: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError:
        return []


def _is_cache_folder(folder: Path, names: list[str]) -> bool:
    """Every entry belongs to a cache (``NAME.h5`` and its siblings), and one index is tlx's."""
    return (
        bool(names)
        and all(n.endswith(CACHE_SUFFIXES) for n in names)
        and any(is_tlx_cache_index(folder / n) for n in names if n.endswith(".h5"))
    )


def tlx_output_kind(folder: Path) -> str | None:
    """What tlx wrote ``folder`` as ("run", "runs", "cache", "cache-part", "demo"), or None: a cache
    folder holds only ``NAME.h5`` indexes (one of them tlx's) and their siblings, a demo folder
    ``digits/`` and a cache folder ``cache/``, a folder of runs only run folders."""
    if is_run_folder(folder, damaged=True):
        return "run"
    if folder.name.endswith(CACHE_SUFFIXES[1:]) and (folder.parent / folder.name.rsplit(".", 1)[0]).is_file():
        return "cache-part"
    names = _names(folder)
    if _is_cache_folder(folder, names):
        return "cache"
    if {"digits", "cache"} <= set(names) and _is_cache_folder(folder / "cache", _names(folder / "cache")):
        return "demo"
    if any(is_image_file(n) for n in names):
        return None  # images beside the runs: a folder to read (each run in it is skipped)
    if names and all((folder / n).is_dir() and is_run_folder(folder / n, damaged=True) for n in names):
        return "runs"
    return None


def _walk_all(folder: Path) -> list[Path]:
    return sorted(
        Path(d) / f
        for d, _, files in os.walk(folder)
        for f in files
        if is_image_file(f) and not any(part.startswith(".") for part in Path(d).parts)
    )


def _skipped_output(rel: str, folder: Path, kind: str) -> str:
    """The note for tlx output left out of the data: a warning when images tlx did not write
    sit inside it (they are not read: the user should know, and move them). A run's own plots
    are tlx's."""
    images = [] if kind in ("cache-part", "demo") else walk_images(folder) if kind == "cache" else _walk_all(folder)
    stray = [p for p in images if p.name not in _PLOTS or p.parent.parent.name == "checkpoints"]
    if not stray:
        return f"ignored {rel}/: {_OUTPUT_WORDS[kind]} (tlx's own output), not data"
    return (
        f"warning: ignored {rel}/: {_OUTPUT_WORDS[kind]}, yet it holds {_plural(len(stray), 'image')} "
        f"tlx did not write ({_listing([p.name for p in stray])}): move them into a class folder if they are data"
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p.name))


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _listing(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _loose_note(loose: list[Path], where: str, inside: str) -> str:
    names = _listing([p.name for p in loose])
    return f"ignored {_plural(len(loose), 'image')} directly in {where} ({names}): not inside {inside}"


def _one_per_file(found: Found, notes: list[str]) -> list[Item]:
    """One row per real file: a file reached twice (a link to it, a hard link) is kept where it
    really sits (the path that is not a link), else at its first path in sorted order."""
    found.sort(key=lambda pair: (pair[1].key, pair[1].via_link, pair[0].relpath))
    items, dropped = [], []
    for _, group in itertools.groupby(found, key=lambda pair: pair[1].key):
        kept, *others = (item for item, _ in group)
        items.append(kept)
        dropped += [f"{item.relpath} (= {kept.relpath})" for item in others]
    if dropped:
        notes.append(
            f"ignored {_plural(len(dropped), 'path')} to images already in the data (links or hard links; "
            f"each file is one row): {_listing(sorted(dropped))}"
        )
    return items


def _from_folders(root: Path) -> tuple[str, list[Item], list[str]]:
    """The split layout when split folders with class folders are there, else class folders.
    Nothing else is turned into a class: stray entries are reported in the notes."""
    notes: list[str] = []
    walker = _Walker(root, notes)
    subdirs = walker.class_dirs(root)
    loose = _loose_images(root)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES and _subdirs(d)]
    found: Found = []
    if split_dirs:
        for split_dir in split_dirs:
            found += walker.labelled(walker.class_dirs(split_dir), SPLIT_ALIASES[split_dir.name.lower()])
            if split_loose := _loose_images(split_dir):
                notes.append(_loose_note(split_loose, f"{split_dir.name}/", "a class folder"))
        for d in (d for d in subdirs if d not in split_dirs):
            n = len(walk_images(d))
            why = "a split folder without class folders" if d.name.lower() in SPLIT_ALIASES else "not a split folder"
            notes.append(f"ignored {d.name}/ ({_plural(n, 'image')}): {why}; expected DATA/<split>/<class>/<image>")
    else:
        found = walker.labelled(subdirs, "")
    items = _one_per_file(found, notes)
    walker.report()
    if loose and not items and not split_dirs:
        are = "is" if len(loose) == 1 else "are"
        raise DatasetError(f"{root}: {_plural(len(loose), 'image')} {are} not inside class folders; {LAYOUT_HELP}")
    if loose:
        notes.append(_loose_note(loose, "the data folder", "a split folder" if split_dirs else "a class folder"))
    if split_dirs:
        return "split", items, notes
    labels = sorted({it.label for it in items})
    if labels and all(label.lower() in SPLIT_ALIASES for label in labels):
        folders = ", ".join(f"{label}/" for label in labels)
        raise DatasetError(
            f"{root} has split folders {folders} holding images directly, not class folders: {LAYOUT_HELP}"
        )
    return "folder", items, notes


def _note_case_clashes(classes: list[str], notes: list[str]) -> None:
    """Class names that differ only in case are two classes here, and one on some file systems."""
    by_fold: dict[str, list[str]] = {}
    for c in classes:
        by_fold.setdefault(c.casefold(), []).append(c)
    clashes = ["/".join(names) for names in by_fold.values() if len(names) > 1]
    if clashes:
        notes.append(
            f"warning: class names that differ only in case are different classes: {', '.join(clashes)}; "
            "rename the folders (or labels) to one spelling if they mean the same class"
        )


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
        path, label, split = ((row.get(column) or "").strip() for column in ("path", "label", "split"))
        if not path or not label:
            raise DatasetError(f"{csv_path} line {line_no}: empty path or label; every row needs both")
        p = root / path  # an absolute path stays as it is
        rel = (p.relative_to(root) if p.is_relative_to(root) else p).as_posix()
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
    for before, it in itertools.pairwise(items):
        if it.relpath == before.relpath:
            raise DatasetError(f"{it.relpath} is listed twice in {data}; each image may appear once")
    classes = sorted({it.label for it in items})
    _note_case_clashes(classes, notes)
    if len(classes) < 2:
        raise DatasetError(
            f"{data} has a single class {classes[0]!r} ({len(items)} images): "
            "a classifier needs at least two class folders or labels"
        )
    return DatasetIndex(root, name, layout, items, classes, notes)
