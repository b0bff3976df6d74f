"""The files a finished fine-tuning run leaves next to ``metrics.json``: the best weights as
``model.safetensors``, ``finetune.json`` (what is needed to rebuild the network), the
confusion matrix and the learning curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..common.atomic import write_atomic, write_bytes_atomic, write_json_atomic
from .config import selection_record
from .model import CONFIG_FILE, MODEL_FILE


def save_model(state: dict[str, torch.Tensor], run_dir: Path) -> Path:
    from safetensors.torch import save

    path = Path(run_dir) / MODEL_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_bytes_atomic(path, save(tensors, metadata={"format": "pt", "tlx": "finetune"}))
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
        ax_acc.axvline(best_epoch, color="gray", linestyle=":", label=f"kept (epoch {best_epoch})")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(val_epochs if len(val_epochs) <= 20 else val_epochs[:: max(1, len(val_epochs) // 10)])
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=100, format="png"), mode="wb")
    plt.close(fig)
    return Path(path)


def write_run(run, state, run_dir: Path, order: np.ndarray, proba: np.ndarray, version: str) -> dict:
    """Everything a finished run leaves: metrics.json, the best weights, finetune.json and the plots.
    ``run`` is the run's :class:`tlx.finetune.train.Setup`, ``state`` its loop state; ``order``
    and ``proba`` the val rows (indices into ``run.split``'s val side) and their probabilities."""
    from ..common.mistakes import plot_top_losses
    from ..common.runfolder import compute_metrics, plot_confusion, write_metrics

    split = run.split
    y_true = split.val_labels[order]
    scores = compute_metrics(y_true, proba, split.classes)
    metrics = run_metrics(run, state, scores, len(y_true), version)
    save_model(state.best_weights, run_dir)
    write_finetune_config(run_dir, network_record(run, state.best_epoch + 1, version))
    plot_confusion(np.asarray(scores["confusion_matrix"]), split.classes, run_dir / "confusion.png")
    plot_learning_curve(state.history, run_dir / "learning_curve.png", state.best_epoch + 1, state.init_eval)
    val_paths = [split.val_paths[i] for i in order]
    plot_top_losses(val_paths, y_true, proba, split.classes, run_dir / "top_losses.png")
    write_metrics(run_dir, metrics)
    return metrics


def run_metrics(run, state, scores: dict, n_val_scored: int, version: str) -> dict:
    """``metrics.json`` of a finished run: the val scores of the kept epoch, the history, the split."""
    from ..cache.catalog import now_iso
    from ..common.mistakes import most_confused

    cfg, split, history = run.cfg, run.split, state.history
    return {
        "kind": "finetune",
        "clf": "finetune",
        "params": cfg.to_dict(),
        "val_accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": scores["confusion_matrix"],
        "most_confused": most_confused(scores["confusion_matrix"], split.classes),
        "log_loss": scores["log_loss"],
        "fit_seconds": round(float(sum(h["seconds"] for h in history)), 3),
        "feature_space": run.space.to_dict(),
        "cache": str(run.cache_path) if run.cache_path else "",
        "classes": list(split.classes),
        "split": split.info,
        "n_train": len(split.train_paths),
        "n_val": len(split.val_paths),
        "n_val_scored": n_val_scored,
        "created": now_iso(),
        "tlx_version": version,
        "best_epoch": state.best_epoch + 1,
        "epochs_done": len(history),
        "early_stopped": bool(state.stopped),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])) if history else 0.0, 3),
        "history": history,
        # With --init-head: the fitted head's own val accuracy before any step (best_epoch 0 = it won,
        # which only --select-on val allows).
        "init_head_val_accuracy": (state.init_eval or {}).get("val_accuracy"),
        "selection": selection_record(cfg),
    }


def network_record(run, best_epoch: int, version: str) -> dict:
    """``finetune.json``: what is needed to rebuild the fine-tuned network (``tlx.finetune.model``)."""
    cfg, space = run.cfg, run.space
    return {
        "kind": "finetune",
        "backbone": cfg.backbone,
        "architecture": run.backbone.cfg.architecture,
        "weights": cfg.weights,
        "weights_id": space.weights_id,
        "weights_sha256": space.weights_sha256,
        "pooling": cfg.pool,
        "feature_dim": space.feature_dim,
        "classes": list(run.split.classes),
        "preprocessing": space.preprocessing.to_dict(),
        "unfreeze": cfg.unfreeze,
        "n_stages": len(run.backbone.stages),
        "init_head": cfg.init_head,
        "best_epoch": best_epoch,
        "selection": selection_record(cfg),
        "tlx_version": version,
    }
