"""Crash-safe checkpoints (a kill -9 leaves the previous one intact) that hold only tensors, numbers,
strings, lists and dicts, so they load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..common.atomic import write_bytes_atomic
from ..errors import RunError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def save_atomic(obj, path: Path) -> None:
    # serialised in memory first: torch's writer reports a full disk as a RuntimeError, while
    # a plain write raises the OSError that becomes one clear line
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except Exception as exc:
        raise RunError(
            f"{path} is not a tlx checkpoint that loads with weights_only=True ({type(exc).__name__}: {exc}); "
            "it is damaged, start a new run"
        ) from None


def rng_state() -> dict:
    """Every RNG a training step may draw from, as tensors and numbers (``weights_only`` loads them)."""
    _, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(gauss),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(py_version),
        "python_gauss": py_gauss,  # a float or None
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(state["python"].tolist()), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class LoopState:
    """Where the epoch loop stands. ``last.pt`` holds it with the network, optimizer, scheduler,
    RNG states and config; ``best.pt`` holds the best weights. Epochs are 0-based here; a best
    epoch of -1 is the fitted head of an LP-FT run, scored before any step."""

    next_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_accuracy: float = -1.0
    bad_epochs: int = 0
    stopped: bool = False
    init_eval: dict | None = None  # LP-FT: the fitted head's val loss and accuracy
    best_weights: dict | None = None  # on the CPU
    best_eval: dict | None = None  # this process's evaluation of the best weights (not saved)

    def improve(self, epoch: int, accuracy: float, net: torch.nn.Module, evaluation: dict | None) -> None:
        self.best_epoch, self.best_accuracy = epoch, accuracy
        self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        self.best_eval = evaluation


def save_last(path: Path, training, epoch: int, state: LoopState, extra: dict) -> None:
    """``extra``: the config, cache, feature space and split, saved as they are."""
    save_atomic(
        {
            "model": {k: v.detach().cpu() for k, v in training.net.state_dict().items()},
            "optimizer": training.optimizer.state_dict(),
            "scheduler": training.scheduler.state_dict(),
            "scaler": training.scaler.state_dict() if training.scaler is not None else {},
            "epoch": epoch,
            "rng": rng_state(),
            "history": state.history,
            "best": {"epoch": state.best_epoch, "val_accuracy": state.best_accuracy},
            "bad_epochs": state.bad_epochs,
            "stopped": state.stopped,
            "init_eval": state.init_eval or {},
            **extra,
        },
        path,
    )


def save_best(path: Path, state: LoopState) -> None:
    save_atomic({"model": state.best_weights, "epoch": state.best_epoch, "val_accuracy": state.best_accuracy}, path)


def restore(saved: dict, training, run_dir: Path, is_main: bool) -> LoopState:
    """Load ``last.pt``'s contents into the network, optimizer, scheduler and RNGs; returns the
    loop's state with the best weights from ``best.pt``."""
    training.net.load_state_dict(saved["model"])
    training.optimizer.load_state_dict(saved["optimizer"])
    training.scheduler.load_state_dict(saved["scheduler"])
    if training.scaler is not None and saved.get("scaler"):
        training.scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    last_epoch = int(saved["epoch"])
    state = LoopState(
        next_epoch=last_epoch + 1,
        history=list(saved["history"]),
        best_epoch=int(saved["best"]["epoch"]),
        best_accuracy=float(saved["best"]["val_accuracy"]),
        bad_epochs=int(saved["bad_epochs"]),
        stopped=bool(saved["stopped"]),
        init_eval=saved.get("init_eval") or None,
    )
    best_path = run_dir / CHECKPOINT_DIR / BEST
    saved_best = load(best_path) if best_path.is_file() else None
    if saved_best is not None and int(saved_best["epoch"]) == state.best_epoch:
        state.best_weights = saved_best["model"]
    elif state.best_epoch == last_epoch:  # killed between writing last.pt and best.pt
        state.best_weights = {k: v.clone() for k, v in saved["model"].items()}
        if is_main:
            save_best(best_path, state)
    else:
        raise RunError(
            f"{best_path} does not hold the best epoch ({state.best_epoch + 1}) that {run_dir / CHECKPOINT_DIR / LAST} "
            "records: the run folder is damaged; start a new run"
        )
    return state
