"""One epoch of training and one pass of evaluation, as plain functions. Each process runs them
on its own shard; sums are all-reduced, so each image counts once whatever the number of processes."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..common.progress import Reporter
from ..errors import TlxError
from .distributed import Dist, all_reduce_sum
from .model import FineTuneNet, set_train_mode

# Called after each training step with (epoch, step), both 0-based; tests use it to pause a run.
StepCallback = Callable[[int, int], None]


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None = None  # autocast dtype on CUDA, None = fp32

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()


@dataclass
class Training:
    """What a training step needs besides the batch: the network (``model`` is ``net``, or
    ``net`` wrapped in DistributedDataParallel), its optimizer, and how to feed it."""

    net: FineTuneNet
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    normalize: nn.Module
    precision: Precision
    trainable: set[str]
    train_bn: bool
    input_size: int
    procs: Dist


def to_device(images: torch.Tensor, normalize: nn.Module, device: torch.device) -> torch.Tensor:
    x = normalize(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _sums(procs: Dist, device: torch.device, *values: float) -> list[float]:
    """``values`` summed over the processes, in float64 (exact for counts), on the GPU for nccl."""
    where = device if procs.enabled and device.type == "cuda" else torch.device("cpu")
    return all_reduce_sum(procs, torch.tensor(values, dtype=torch.float64, device=where)).tolist()


def train_one_epoch(
    training: Training,
    loader,
    labels: np.ndarray,
    epoch: int,
    reporter: Reporter | None = None,
    on_step: StepCallback | None = None,
) -> dict:
    """One pass over this process's shard of the training set; returns local sums. Unreadable images
    drop out of their batch. A step with no image on any process is skipped by all (no optimizer or
    scheduler change); otherwise every process takes part, so DDP's all-reduces stay in step."""
    set_train_mode(training.net, training.trainable, training.train_bn)
    device = training.precision.device
    loss_sum, n, failures = 0.0, 0, []
    diverged = 0  # the step at which this process's loss stopped being finite, plus one
    for step, (indices, images, failed) in enumerate(loader):
        failures += failed
        # The image count and the divergence flag share one all-reduce: every process learns
        # at the same step that one of them saw a NaN/inf loss, and all stop together.
        step_images, bad_step = (int(v) for v in _sums(training.procs, device, len(indices), diverged))
        if bad_step:
            raise LossDiverged(epoch, step - 1, training)
        if step_images:
            loss = _train_step(training, indices, images, labels, step_images)
            diverged = 0 if math.isfinite(loss) else step + 1
            loss_sum += loss
            training.scheduler.step()
        n += len(indices)
        if reporter is not None:
            reporter.advance(len(indices) + len(failed))
        if on_step is not None:
            on_step(epoch, step)
    if _sums(training.procs, device, diverged)[0]:
        raise LossDiverged(epoch, None, training)
    return {"loss_sum": loss_sum, "n": n, "failures": failures}


class LossDiverged(TlxError):
    """The training loss became NaN or infinite: the run stops before the weights, no longer
    numbers, are evaluated, checkpointed or written as a finished run."""

    def __init__(self, epoch: int, step: int | None, training: Training):
        where = f"step {step + 1} of epoch {epoch + 1}" if step is not None else f"the last steps of epoch {epoch + 1}"
        rates = ", ".join(f"{float(g['lr']):.3g}" for g in training.optimizer.param_groups)
        super().__init__(
            f"the training loss became NaN/inf at {where} (learning rates {rates}): the weights diverged, "
            "nothing was saved as a finished run (checkpoints of earlier epochs are kept); lower --lr and --head-lr"
        )


def _train_step(
    training: Training, indices: list[int], images: torch.Tensor, labels: np.ndarray, step_images: int
) -> float:
    """Forward, backward and optimizer step; returns this process's summed (unscaled) loss. DDP
    averages gradients, so the loss is scaled by ``world / step_images``: the mean over the step."""
    device = training.precision.device
    if indices:
        y = torch.as_tensor(labels[indices], device=device)
        with training.precision.autocast():
            logits = training.model(to_device(images, training.normalize, device))
        summed = F.cross_entropy(logits.float(), y, reduction="sum")
        loss = summed * (training.procs.world / step_images)
    else:
        summed = loss = _zero_loss(training)
    optimizer, scaler = training.optimizer, training.scaler
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(summed.detach())


def _zero_loss(training: Training) -> torch.Tensor:
    """A zero loss through the wrapped model, so DDP's hooks fire and this process sends its (zero)
    gradients like the others: one blank image in eval mode, so no BatchNorm statistic moves."""
    device = training.precision.device
    blank = torch.zeros(1, 3, training.input_size, training.input_size, device=device)
    training.net.eval()
    try:
        with training.precision.autocast():
            logits = training.model(blank)
    finally:
        set_train_mode(training.net, training.trainable, training.train_bn)
    return logits.float().sum() * 0.0


@torch.no_grad()
def evaluate(training: Training, loader, labels: np.ndarray, reporter: Reporter | None = None) -> dict:
    """Probabilities for this process's shard of the validation set (no padding, no duplicates)."""
    net, precision, device = training.net, training.precision, training.precision.device
    net.eval()
    rows, probs, failures, loss_sum = [], [], [], 0.0
    for indices, images, failed in loader:
        failures += failed
        if indices:
            y = torch.as_tensor(labels[indices], device=device)
            with precision.autocast():
                logits = net(to_device(images, training.normalize, device)).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            rows += list(indices)
        if reporter is not None:
            reporter.advance(len(indices) + len(failed))
    proba = np.concatenate(probs) if probs else np.zeros((0, net.head.out_features), np.float32)
    return {"indices": np.asarray(rows, dtype=np.int64), "proba": proba, "loss_sum": loss_sum, "failures": failures}


def reduce_eval(procs: Dist, local: dict, labels: np.ndarray, device: torch.device) -> dict:
    """Val loss and accuracy over every process's images (all-reduced sums: exact, each image once)."""
    y = labels[local["indices"]]
    own_hits = int((local["proba"].argmax(axis=1) == y).sum())
    loss_sum, n, hits = _sums(procs, device, local["loss_sum"], len(y), own_hits)
    if not math.isfinite(loss_sum):  # every process has the same sums: all stop together
        raise TlxError(
            "the validation loss became NaN/inf: the network's outputs are not finite numbers (the weights "
            "diverged), so nothing was saved as a finished run (checkpoints of earlier epochs are kept); "
            "lower --lr and --head-lr"
        )
    return {"val_loss": loss_sum / max(1, n), "val_accuracy": hits / max(1, n)}


def reduce_train(procs: Dist, local: dict, device: torch.device) -> tuple[float, int]:
    """The mean training loss over every process's images, and their number."""
    loss_sum, n = _sums(procs, device, local["loss_sum"], local["n"])
    return loss_sum / max(1, n), int(n)
