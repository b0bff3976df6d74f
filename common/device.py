"""Checking the ``--device`` option before any work is done."""

from __future__ import annotations

from ..errors import TlxError


def check_device(device: str | None) -> None:
    """Refuse a CUDA device that torch cannot see, before any work (``auto`` and ``cpu`` import no torch)."""
    if device in (None, "auto", "cpu"):
        return
    if not str(device).startswith("cuda"):
        raise TlxError(f"--device must be auto, cpu or cuda[:N], not {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise TlxError(f"--device {device} was asked for but torch sees no CUDA GPU: use --device cpu or auto")
    index = str(device).partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise TlxError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
