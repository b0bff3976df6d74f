"""The files a finished fine-tuning run leaves next to ``metrics.json``: the best weights as
``model.safetensors``, ``finetune.json`` (what is needed to rebuild the network), the
confusion matrix and the learning curve."""

from __future__ import annotations

from pathlib import Path

import torch

from tlx.common.atomic import atomic_path, write_json_atomic
from tlx.finetune.model import CONFIG_FILE, MODEL_FILE


def save_model(state: dict[str, torch.Tensor], run_dir: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(run_dir) / MODEL_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "tlx": "finetune"})
    return path


def write_finetune_config(run_dir: Path, record: dict) -> Path:
    return write_json_atomic(Path(run_dir) / CONFIG_FILE, record)


def plot_learning_curve(
    history: list[dict], path: Path, best_epoch: int | None = None, init_eval: dict | None = None
) -> Path:
    """Train and validation loss (left) and validation accuracy (right), one point per epoch;
    with ``init_eval`` (LP-FT) the fitted head's own scores appear as epoch 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    val_epochs, val_loss, val_acc = list(epochs), [h["val_loss"] for h in history], [h["val_accuracy"] for h in history]
    if init_eval:
        val_epochs, val_loss, val_acc = (
            [0, *val_epochs],
            [init_eval["val_loss"], *val_loss],
            [init_eval["val_accuracy"], *val_acc],
        )
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.plot(val_epochs, val_loss, "o-", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(val_epochs, val_acc, "o-", color="tab:green", label="validation accuracy")
    if best_epoch is not None:
        ax_acc.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(val_epochs if len(val_epochs) <= 20 else val_epochs[:: max(1, len(val_epochs) // 10)])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
