"""``audit.png``: the top suspected label errors (given -> suggested) and the closest duplicate pairs
side by side, drawn with Pillow; an image that has moved or gone is drawn as a placeholder and counted."""

from __future__ import annotations

from pathlib import Path

from ..common.atomic import write_atomic
from ..common.mistakes import CAPTION, TILE, paste_thumbnail

COLUMNS = 4
LABEL_TILES = 8
PAIRS = 4
HEADING = 20
KIND_ORDER = ["across classes", "across splits", "within class"]


def plot_audit(report, path) -> list[str]:
    """Draw ``path``; returns the images that have moved or gone."""
    from PIL import Image, ImageDraw, ImageFont

    root = Path(report.dataset_root)
    issues = report.label_issues[:LABEL_TILES]
    # Leaks and label conflicts first (byte-identical ones included), then the closest near copies.
    candidates = report.near_duplicates + [d for d in report.exact_duplicates if d["kind"] != "within class"]
    pairs = sorted(candidates, key=lambda d: (KIND_ORDER.index(d["kind"]), -d["score"]))[:PAIRS]
    issue_lines = -(-len(issues) // COLUMNS)
    pair_lines = -(-len(pairs) // (COLUMNS // 2))
    sheet = Image.new("RGB", (COLUMNS * TILE, 2 * HEADING + (issue_lines + pair_lines) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    missing: list[str] = []

    def tile(image_path: Path, x: int, y: int, caption: str, note: str = "") -> None:
        """The image as a thumbnail centered in its tile (a placeholder if it has moved or gone), captioned."""
        if not paste_thumbnail(sheet, draw, font, root / image_path, x, y):
            missing.append(str(root / image_path))
        draw.text((x + 4, y + TILE + 2), caption[:26], font=font, fill="black")
        draw.text((x + 4, y + TILE + 16), note, font=font, fill="firebrick")

    heading = "suspected label errors: given -> suggested (score)" if issues else "no suspected label errors"
    draw.text((4, 3), heading, font=font, fill="black")
    for slot, issue in enumerate(issues):
        x, y = (slot % COLUMNS) * TILE, HEADING + (slot // COLUMNS) * (TILE + CAPTION)
        note = f"{issue['score']:.2f}  {Path(issue['path']).name[:16]}"
        tile(issue["path"], x, y, f"{issue['given']} -> {issue['suggested']}", note)
    top = HEADING + issue_lines * (TILE + CAPTION)
    heading = "duplicates: pairs side by side (kind, similarity)"
    if not pairs:
        heading = "no duplicates across splits or classes, no near duplicates"
    draw.text((4, top + 3), heading, font=font, fill="black")
    for slot, pair in enumerate(pairs):
        y = top + HEADING + (slot // (COLUMNS // 2)) * (TILE + CAPTION)
        for side in range(2):
            x = ((slot % (COLUMNS // 2)) * 2 + side) * TILE
            note = f"{pair['kind']} {pair['match']} {pair['score']:.2f}"[:52] if side == 0 else ""
            tile(pair["paths"][side], x, y, f"{pair['splits'][side] or '-'}/{pair['labels'][side]}", note)
    write_atomic(path, lambda fh: sheet.save(fh, format="PNG", compress_level=1), mode="wb")
    return missing
