"""The fine-tuned network (backbone body + global pooling + one linear layer) and its freezing
rules: ``--unfreeze N`` trains the last N of ``Backbone.stages``; BatchNorm of frozen stages always,
and of unfrozen stages unless ``--train-bn``, keeps its pretrained statistics (eval mode)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import RunError, TlxError
from ..extractor.pooling import GlobalPool

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "finetune.json"


class FineTuneNet(nn.Module):
    """Normalized images (N, 3, S, S) -> class logits (N, C)."""

    def __init__(self, body: nn.Module, pooling: str, feature_dim: int, num_classes: int):
        super().__init__()
        self.body = body
        self.pool = GlobalPool(pooling)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ProbaModel(nn.Module):
    """A fine-tuned network that outputs class probabilities (softmax), for predict and export."""

    def __init__(self, net: FineTuneNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(images).float(), dim=-1)


def parse_unfreeze(value: str | int, n_stages: int, backbone: str) -> int | None:
    """``"all"`` -> None (everything), else an int in 0..n_stages (``check_values`` checked the form)."""
    if value == "all":
        return None
    n = int(value)
    if n > n_stages:
        raise TlxError(
            f"--unfreeze {n} but {backbone} has only {n_stages} stages: "
            f"use 0..{n_stages}, or 'all' for the whole network"
        )
    return n


def trainable_body_params(body: nn.Module, stages: list[list[str]], unfreeze: int | None) -> set[str]:
    """Names (relative to the body) of the parameters that ``unfreeze`` makes trainable."""
    if unfreeze is None:
        return {name for name, _ in body.named_parameters()}
    return {name for stage in stages[len(stages) - unfreeze :] for name in stage}


def apply_freezing(net: FineTuneNet, stages: list[list[str]], unfreeze: int | None) -> set[str]:
    """Set ``requires_grad`` on the body by stage (the head always trains); returns the body's trainable names."""
    trainable = trainable_body_params(net.body, stages, unfreeze)
    unknown = trainable - {name for name, _ in net.body.named_parameters()}
    if unknown:
        raise TlxError(
            f"internal error: the backbone's stages name parameters it does not have (first: {sorted(unknown)[0]!r})"
        )
    for name, p in net.body.named_parameters():
        p.requires_grad_(name in trainable)
    net.head.requires_grad_(True)
    return trainable


def set_train_mode(net: FineTuneNet, trainable: set[str], train_bn: bool) -> None:
    """``net.train()``, except a fully frozen body and the BatchNorm layers that must not train."""
    net.train()
    if not trainable:
        net.body.eval()
        return
    for name, module in net.body.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        prefix = f"{name}." if name else ""
        own = [f"{prefix}{p}" for p, _ in module.named_parameters(recurse=False)]
        unfrozen = bool(own) and all(p in trainable for p in own)
        if not (train_bn and unfrozen):
            module.eval()


def fold_linear_head(head: nn.Linear, W, b, shift=None, scale=None) -> None:
    """Copy a fitted linear head ``softmax(((x - shift) / scale) @ W.T + b)`` into ``head``:
    W' = W / scale, b' = b - W' @ shift, so ``head(x)`` gives the same logits on raw features."""
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if W.shape != tuple(head.weight.shape) or b.shape != (head.out_features,):
        raise TlxError(
            f"the fitted head is {W.shape[0]} classes x {W.shape[1]} features but this model needs "
            f"{head.out_features} x {head.in_features}: fit the head on the same classes and feature space"
        )
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        W = W / np.where(scale == 0, 1.0, scale)[None, :]
    if shift is not None:
        b = b - W @ np.asarray(shift, dtype=np.float64)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W).to(head.weight.dtype))
        head.bias.copy_(torch.from_numpy(b).to(head.bias.dtype))


def build_net(backbone, pooling: str, num_classes: int) -> FineTuneNet:
    from ..cache.space import FeatureSpace

    width = FeatureSpace.from_backbone(backbone.cfg, pooling).feature_dim
    return FineTuneNet(backbone.body, pooling, width, num_classes)


def load_finetuned(run_dir: str | Path):
    """``(module, preprocessing)`` of a fine-tuning run: ``module`` maps a normalized batch to class
    probabilities. Built from the run folder alone: the saved weights replace a random init."""
    from safetensors.torch import load_file

    from ..cache.space import Preprocessing
    from ..extractor.registry import get_backbone

    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise RunError(
            f"{run_dir} is not a finished fine-tuning run: {CONFIG_FILE} is missing "
            f"(a killed run? continue it with `tlx finetune --out {run_dir} --resume`)"
        ) from None
    except ValueError as exc:
        raise RunError(
            f"{run_dir / CONFIG_FILE} is not valid JSON ({exc}): the run folder is damaged; re-run `tlx finetune`"
        ) from None
    weights = run_dir / MODEL_FILE
    if not weights.is_file():
        raise RunError(
            f"{weights} is missing: the fine-tuning run did not finish; "
            f"continue it with `tlx finetune --out {run_dir} --resume`"
        )
    backbone = get_backbone(cfg["backbone"]).build(weights=None, pretrained=False)
    net = FineTuneNet(backbone.body, cfg["pooling"], int(cfg["feature_dim"]), len(cfg["classes"]))
    missing, unexpected = net.load_state_dict(load_file(str(weights)), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise RunError(
            f"{weights} does not fit {cfg['backbone']} ({len(missing)} missing, {len(unexpected)} unexpected "
            f"tensors, first {first!r}): the run folder is damaged or was edited"
        )
    return ProbaModel(net).eval(), Preprocessing.from_dict(cfg["preprocessing"])
