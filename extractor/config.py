"""The typed record of one pretrained backbone config (no torch imported here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cache.space import Preprocessing


@dataclass(frozen=True)
class BackboneCfg:
    """Everything needed to rebuild the same features later."""

    name: str  # registry name, e.g. "efficientnet_lite0" or "torchvision:resnet18"
    architecture: str
    feature_dim: int  # channels of the final feature map (before avg+max doubling)
    preprocessing: Preprocessing
    weights_id: str  # human-readable origin of the weights
    weights_sha256: str  # sha256 of the weights file, or of the state dict for random inits
    license: str = "unknown"
    extra: dict = field(default_factory=dict)
