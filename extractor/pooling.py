"""Global pooling of a backbone's final feature map into one vector per image."""

from __future__ import annotations

import torch
from torch import nn


class GlobalPool(nn.Module):
    """``avg``, ``max`` or ``avgmax`` (both concatenated, so twice as wide).

    Accepts convolutional maps (N, C, H, W) and transformer tokens (N, L, C).
    """

    def __init__(self, mode: str = "avg"):
        super().__init__()
        if mode not in ("avg", "max", "avgmax"):
            raise ValueError(f"pooling must be avg, max or avgmax, not {mode!r}")
        self.mode = mode

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        dims = (2, 3) if fmap.dim() == 4 else (1,)
        if self.mode == "avg":
            return fmap.mean(dims)
        if self.mode == "max":
            return fmap.amax(dims)
        return torch.cat([fmap.mean(dims), fmap.amax(dims)], dim=1)


class FeatureExtractor(nn.Module):
    """Backbone body followed by global pooling: images in, pooled pre-logits features out."""

    def __init__(self, body: nn.Module, pooling: str = "avg"):
        super().__init__()
        self.body = body
        self.pool = GlobalPool(pooling)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(images)).float()
