"""Helpers shared by the benchmark scripts (not part of the tlx package)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera"


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def require_data(path: Path) -> Path:
    if not path.is_dir():
        raise SystemExit(f"benchmark data not found at {path}: pass --data DIR (an image folder or split folder)")
    return path
