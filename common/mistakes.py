"""Looking at the mistakes: the most confused class pairs and the most confidently wrong images,
drawn as a grid (fastai's ``plot_top_losses``) with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import write_atomic

TILE = 160  # thumbnail side in pixels
CAPTION = 34  # caption height under each thumbnail


def most_confused(cm, classes: Sequence[object], top: int = 10) -> list[dict]:
    """The off-diagonal cells of the confusion matrix, largest first: ``[{true, predicted, count}]``."""
    cm = np.asarray(cm)
    pairs = [(int(cm[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [{"true": str(classes[i]), "predicted": str(classes[j]), "count": n} for n, i, j in pairs[:top]]


def top_losses(y_true: np.ndarray, proba: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the at most ``k`` wrongly predicted rows with the highest loss, largest first."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    wrong = np.flatnonzero(proba.argmax(axis=1) != y_true)
    loss = -np.log(np.clip(proba[wrong, y_true[wrong]], 1e-15, 1.0))
    return wrong[np.argsort(-loss, kind="stable")][:k]


def plot_top_losses(paths: Sequence[str | Path], y_true, proba, classes: Sequence[object], path, k: int = 16) -> dict:
    """Write the grid of the top losses as a PNG at ``path``: ``{"shown": n, "missing": [paths]}``. An
    image moved or gone since the run is drawn as a labelled placeholder and counted."""
    from PIL import Image, ImageDraw, ImageFont

    rows = top_losses(y_true, proba, k)
    columns = max(1, min(4, len(rows)))
    lines = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * TILE, lines * (TILE + CAPTION) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    title = "most confident mistakes: true / predicted (p)" if len(rows) else "no mistakes on the validation images"
    draw.text((4, 3), title, font=font, fill="black")
    missing: list[str] = []
    for slot, row in enumerate(rows):
        x, y = (slot % columns) * TILE, 20 + (slot // columns) * (TILE + CAPTION)
        if not paste_thumbnail(sheet, draw, font, paths[row], x, y):
            missing.append(str(paths[row]))
        predicted = int(np.argmax(proba[row]))
        caption = f"{classes[int(y_true[row])]} / {classes[predicted]}"
        draw.text((x + 4, y + TILE + 2), caption[:26], font=font, fill="black")
        score = f"p={float(proba[row][predicted]):.2f}  {Path(paths[row]).name[:14]}"
        draw.text((x + 4, y + TILE + 16), score, font=font, fill="firebrick")
    write_atomic(path, lambda fh: sheet.save(fh, format="PNG", compress_level=1), mode="wb")
    return {"shown": len(rows), "missing": missing}


def paste_thumbnail(sheet, draw, font, path, x: int, y: int) -> bool:
    """Paste the image at ``path`` as a thumbnail centered in the tile at (x, y), upright; draw a
    placeholder and return False if it has moved or gone or cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (TILE, TILE))  # a JPEG decodes at 1/2..1/8 scale: a thumbnail needs no more
            thumb = ImageOps.exif_transpose(image).convert("RGB")
            thumb.thumbnail((TILE - 6, TILE - 6))
    except OSError:
        draw.rectangle([x + 3, y + 3, x + TILE - 4, y + TILE - 4], outline="gray")
        draw.text((x + TILE / 2, y + TILE / 2), "image moved or gone", font=font, anchor="mm", fill="gray")
        return False
    sheet.paste(thumb, (x + (TILE - thumb.width) // 2, y + (TILE - thumb.height) // 2))
    return True
