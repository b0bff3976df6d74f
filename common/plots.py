"""The confusion-matrix picture, drawn with Pillow: matplotlib would cost about half a second of
import and layout, which a ``tlx fit-head`` that fits in a tenth of that should not pay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import write_atomic

LIGHT, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # the ends of matplotlib's "Blues"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def plot_confusion(cm, classes: Sequence[object], path) -> Path:
    """Write the confusion matrix as a PNG: rows = true class, columns = predicted class."""
    from PIL import Image, ImageDraw

    cm = np.asarray(cm, dtype=np.int64)
    names = [str(c) for c in classes]
    k = len(names)
    cell = int(np.clip(480 // max(k, 1), 14, 64))
    font = _font(max(8, min(16, cell // 3)))
    label_w = int(min(220, 12 + max((font.getlength(n) for n in names), default=0)))
    margin = label_w + 24
    image = Image.new("RGB", (max(margin + k * cell + 16, 230), 24 + k * cell + label_w), "white")
    draw = ImageDraw.Draw(image)
    top = cm.max() if cm.size else 0
    for i in range(k):
        for j in range(k):
            share = cm[i, j] / top if top else 0.0
            color = tuple(int(v) for v in LIGHT + (DARK - LIGHT) * share)
            x, y = margin + j * cell, 16 + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=color)
            if k <= 30:  # beyond that the counts would not fit their cells
                ink = "white" if share > 0.5 else "black"
                draw.text((x + cell / 2, y + cell / 2), str(cm[i, j]), font=font, anchor="mm", fill=ink)
    columns = Image.new("RGB", (label_w, k * cell), "white")  # predicted classes, written sideways
    column_draw = ImageDraw.Draw(columns)
    for i, name in enumerate(names):  # true classes down the left, predicted ones along the bottom
        draw.text((margin - 6, 16 + i * cell + cell / 2), name, font=font, anchor="rm", fill="black")
        column_draw.text((label_w - 6, i * cell + cell / 2), name, font=font, anchor="rm", fill="black")
    image.paste(columns.rotate(90, expand=True), (margin, 16 + k * cell + 4))
    draw.text((4, 2), "rows: true class, columns: predicted", font=_font(11), fill="gray")
    write_atomic(path, lambda fh: image.save(fh, format="PNG", compress_level=1), mode="wb")
    return Path(path)
