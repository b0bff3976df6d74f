"""The optimizer (head and body with their own learning rates) and the per-step schedule."""

from __future__ import annotations

import math

import torch

from .config import FinetuneConfig
from .model import FineTuneNet


def make_optimizer(net: FineTuneNet, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """Head and body in separate groups (own learning rates); no weight decay on biases and norms."""
    groups = []
    for part, lr in ((net.head, cfg.head_lr), (net.body, cfg.lr)):
        params = [p for p in part.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per step: linear warm-up from ~0 to the base rates, then cosine decay to 0."""
    total_steps, warmup_steps = max(1, total_steps), max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
