"""Crash-safe checkpoints: written to a temporary file, fsynced and renamed (``os.replace`` is
atomic), so a kill -9 leaves the previous checkpoint intact. Everything in them is tensors,
numbers, strings, lists and dicts, so they load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from tlx.common.atomic import write_atomic
from tlx.errors import RunError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda fh: torch.save(obj, fh), mode="wb")


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except Exception as exc:
        raise RunError(
            f"{path} is not a tlx checkpoint that loads with weights_only=True ({type(exc).__name__}: {exc}); it is damaged, start a new run"
        ) from None


def rng_state() -> dict:
    """Every RNG a training step may draw from, as tensors and ints only."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
        "python_version": int(py_state[0]),
        "python_gauss": float(py_state[2]) if py_state[2] is not None else None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
