"""The confusion-matrix PNG is drawn without matplotlib and shows the counts as shades."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import REPO
from PIL import Image

from tlx.common.plots import plot_confusion


def test_confusion_png_shades_cells_by_count(tmp_path):
    path = plot_confusion([[9, 0], [1, 5]], ["ants", "bees"], tmp_path / "cm.png")
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[0] > 100 and image.shape[1] > 100
    darkest, lightest = image.sum(axis=2).min(), image.sum(axis=2).max()
    assert darkest < 300 and lightest == 765  # a dark cell (the 9) beside a white background


def test_confusion_png_needs_no_matplotlib(tmp_path):
    code = (
        "import sys\n"
        "from tlx.common.plots import plot_confusion\n"
        f"plot_confusion([[1, 2], [3, 4]], ['a', 'b'], {str(tmp_path / 'cm.png')!r})\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, check=True)
    assert out.stdout.strip() == "False"
