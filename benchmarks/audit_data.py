"""Faulted copies of real photo sets for ``benchmarks/audit.py`` (not part of the tlx package).

* ``ants-bees-faults``: the ants/bees photos with 10 training ants moved into ``train/bees``
  (label errors), 3 training bees copied byte for byte into ``val/bees`` (leaks), one ant copied
  within its class, one bee copied into ``train/ants`` (two labels), 3 photos re-encoded as JPEG
  quality 70 at 0.8x size (one into val: a near-duplicate leak), one foreign image (a handwritten
  digit) in ``train/ants``, and one file that is not an image.
* ``digits5-moved``: scikit-learn's digits 0-4 written as photos-like PNGs (as ``tlx demo`` does;
  60 train and 20 val per class) with 10 training images of "4" moved into "1": the closest
  5-class real image set available offline.

Each builder returns the paths (relative to the data root) of every injected fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

MOVED = 10


def _pick(rng, files: list[Path], n: int, taken: set) -> list[Path]:
    free = [f for f in files if f not in taken]
    chosen = [free[i] for i in sorted(rng.choice(len(free), n, replace=False))]
    taken.update(chosen)
    return chosen


def ants_bees_faults(source: Path, out: Path, seed: int = 0) -> dict:
    """Copy ``source`` (train/val x ants/bees) to ``out`` and inject the faults listed above."""
    from PIL import Image

    manifest = out / "faults.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    shutil.copytree(source, out)
    rng = np.random.default_rng(seed)
    ants = sorted((out / "train" / "ants").glob("*.jpg"))
    bees = sorted((out / "train" / "bees").glob("*.jpg"))
    taken: set = set()
    faults: dict = {"moved": [], "leak_copies": [], "within_copy": [], "cross_class_copy": [], "reencoded": []}
    for f in _pick(rng, ants, MOVED, taken):
        f.rename(out / "train" / "bees" / f.name)
        faults["moved"].append(f"train/bees/{f.name}")
    for f in _pick(rng, bees, 3, taken):
        shutil.copy(f, out / "val" / "bees" / f"copy-{f.name}")
        faults["leak_copies"].append([f"train/bees/{f.name}", f"val/bees/copy-{f.name}"])
    for f in _pick(rng, ants, 1, taken):
        shutil.copy(f, out / "train" / "ants" / f"copy-{f.name}")
        faults["within_copy"].append([f"train/ants/{f.name}", f"train/ants/copy-{f.name}"])
    for f in _pick(rng, bees, 1, taken):
        shutil.copy(f, out / "train" / "ants" / f"bee-{f.name}")
        faults["cross_class_copy"].append([f"train/bees/{f.name}", f"train/ants/bee-{f.name}"])
    for i, f in enumerate(_pick(rng, ants, 3, taken)):
        split = "val" if i == 0 else "train"
        with Image.open(f) as im:
            small = im.convert("RGB").resize((round(im.width * 0.8), round(im.height * 0.8)), Image.Resampling.BICUBIC)
        small.save(out / split / "ants" / f"q70-{f.name}", quality=70)
        faults["reencoded"].append([f"train/ants/{f.name}", f"{split}/ants/q70-{f.name}"])
    from sklearn.datasets import load_digits

    from tlx.extractor.demo_data import digit_image

    digit_image(load_digits().images[7], 224).save(out / "train" / "ants" / "foreign-digit.png")
    faults["foreign"] = ["train/ants/foreign-digit.png"]
    (out / "train" / "bees" / "broken.jpg").write_bytes(b"this is not a JPEG file\n" * 20)
    faults["broken"] = ["train/bees/broken.jpg"]
    manifest.write_text(json.dumps(faults, indent=1))
    return faults


def digits_moved(out: Path, seed: int = 0, source: str = "4", target: str = "1") -> dict:
    """Digits 0-4 (60 train / 20 val per class) with 10 training images of ``source`` moved into ``target``."""
    from tlx.extractor.demo_data import write_digits

    manifest = out / "faults.json"
    if manifest.exists():
        return json.loads(manifest.read_text())
    write_digits(out / "all", per_class_train=60, per_class_val=20, size=64, seed=seed)
    for split in ("train", "val"):
        for digit in "01234":
            shutil.copytree(out / "all" / split / digit, out / "data" / split / digit)
    shutil.rmtree(out / "all")
    rng = np.random.default_rng(seed)
    files = sorted((out / "data" / "train" / source).glob("*.png"))
    moved = []
    for f in _pick(rng, files, MOVED, set()):
        f.rename(out / "data" / "train" / target / f.name)
        moved.append(f"train/{target}/{f.name}")
    faults = {"moved": moved, "root": str(out / "data")}
    manifest.write_text(json.dumps(faults, indent=1))
    return faults
