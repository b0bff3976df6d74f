"""The files of a finished fine-tuning run: ``metrics.json``, the best weights as ``model.safetensors``,
``finetune.json`` (what rebuilds the network) and the plots."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..common.atomic import write_atomic, write_bytes_atomic, write_json_atomic
from ..version import __version__
from .config import selection_record
from .model import CONFIG_FILE, MODEL_FILE


def plot_learning_curve(history: list[dict], path: Path, best_epoch: int, init_eval: dict | None) -> None:
    """Train and val loss (left) and val accuracy (right) per epoch; with ``init_eval`` (LP-FT)
    the fitted head's own scores appear as epoch 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [{"epoch": 0, **init_eval}, *history] if init_eval else history
    val_epochs = [h["epoch"] for h in scored]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.plot(val_epochs, [h["val_loss"] for h in scored], "o-", label="validation loss")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy")
    ax_acc.plot(val_epochs, [h["val_accuracy"] for h in scored], "o-", color="tab:green", label="validation accuracy")
    ax_acc.axvline(best_epoch, color="gray", linestyle=":", label=f"kept (epoch {best_epoch})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
        if history:
            ax.set_xticks(val_epochs if len(val_epochs) <= 20 else val_epochs[:: len(val_epochs) // 10])
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=100, format="png"), mode="wb")
    plt.close(fig)


def write_run(run, state, run_dir: Path, order: np.ndarray, proba: np.ndarray, summary: dict) -> dict:
    """Write the run folder of ``run`` (a :class:`tlx.finetune.train.Setup`) from its loop state and
    the val rows ``order`` (indices into ``run.split``'s val side) with their probabilities;
    ``summary`` holds the fields metrics.json shares with ``FinetuneResult``."""
    from safetensors.torch import save

    from ..common.metrics import compute_metrics
    from ..common.mistakes import plot_top_losses
    from ..common.plots import plot_confusion
    from ..common.runfolder import write_metrics

    split = run.split
    y_true = split.val_labels[order]
    scores = compute_metrics(y_true, proba, split.classes)
    metrics = {**run_metrics(run, state, scores, len(y_true)), **summary}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.best_weights.items()}
    write_bytes_atomic(run_dir / MODEL_FILE, save(tensors, metadata={"format": "pt", "tlx": "finetune"}))
    write_json_atomic(run_dir / CONFIG_FILE, network_record(run, state.best_epoch + 1))
    plot_confusion(np.asarray(scores["confusion_matrix"]), split.classes, run_dir / "confusion.png")
    plot_learning_curve(state.history, run_dir / "learning_curve.png", state.best_epoch + 1, state.init_eval)
    val_paths = [split.val_paths[i] for i in order]
    plot_top_losses(val_paths, y_true, proba, split.classes, run_dir / "top_losses.png")
    write_metrics(run_dir, metrics)
    return metrics


def run_metrics(run, state, scores: dict, n_val_scored: int) -> dict:
    """``metrics.json`` of a finished run: the val scores of the kept epoch, the history, the split."""
    from ..cache.catalog import now_iso
    from ..common.mistakes import most_confused

    cfg, split, history = run.cfg, run.split, state.history
    return {
        "kind": "finetune",
        "clf": "finetune",
        "params": asdict(cfg),
        "val_accuracy": scores["accuracy"],
        **{k: v for k, v in scores.items() if k != "accuracy"},  # balanced_accuracy, macro_f1, per_class...
        "most_confused": most_confused(scores["confusion_matrix"], split.classes),
        "fit_seconds": round(float(sum(h["seconds"] for h in history)), 3),
        "feature_space": run.space.to_dict(),
        "cache": str(run.cache_path) if run.cache_path else "",
        "classes": list(split.classes),
        "split": split.info,
        "n_val_scored": n_val_scored,
        "created": now_iso(),
        "tlx_version": __version__,
        "history": history,
        # With --init-head: the fitted head's own val accuracy before any step (best_epoch 0 = it won,
        # which only --select-on val allows).
        "init_head_val_accuracy": (state.init_eval or {}).get("val_accuracy"),
    }


def network_record(run, best_epoch: int) -> dict:
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
        "tlx_version": __version__,
    }
