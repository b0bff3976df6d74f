"""The demo dataset: scikit-learn's handwritten digits (1,797 real 8x8 scans shipped with it, so
no download) written as the split layout ``DATA/{train,val}/<digit>/<image>.png``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASS_NAMES = tuple("0123456789")


@dataclass
class DemoData:
    root: Path
    n_train: int
    n_val: int

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_val


def digit_image(pixels: np.ndarray, size: int = 64):
    """One 8x8 scan (values 0..16) -> an RGB PIL image of ``size`` px, dark ink on white (closer to
    photos than white on black), padded by a pixel so the backbone's center crop keeps the stroke."""
    from PIL import Image

    ink = np.clip(pixels.reshape(8, 8), 0, 16) / 16.0
    gray = np.pad(255.0 * (1.0 - ink), 1, constant_values=255.0)
    img = Image.fromarray(gray.round().astype(np.uint8), mode="L")
    return img.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def write_digits(
    out: str | Path, per_class_train: int = 30, per_class_val: int = 15, size: int = 64, seed: int = 0
) -> DemoData:
    """Write a balanced train/val split under ``out``; existing files are kept as they are, so
    re-running the demo reuses the feature cache."""
    from sklearn.datasets import load_digits

    if per_class_train < 1 or per_class_val < 1:
        raise ValueError("per_class_train and per_class_val must be at least 1")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(out)
    for label, name in enumerate(CLASS_NAMES):
        idx = np.flatnonzero(digits.target == label)
        need = per_class_train + per_class_val
        if need > len(idx):
            raise ValueError(f"digit {name} has only {len(idx)} images; asked for {need}")
        pick = rng.permutation(idx)[:need]
        for split, chosen in (("train", pick[:per_class_train]), ("val", pick[per_class_train:])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in sorted(chosen.tolist()):
                path = folder / f"digit-{i:04d}.png"
                if not path.exists():
                    digit_image(digits.images[i], size).save(path, optimize=False)
    return DemoData(root, per_class_train * len(CLASS_NAMES), per_class_val * len(CLASS_NAMES))
