"""What identifies a feature space: the preprocessing, backbone, weights, pooling and precision
that made a cache's vectors. Vectors of two different spaces never mix. (No torch here.)"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Protocol


def pool_label(pooling: str, stages: int = 0) -> str:
    return f"{pooling}-s{stages}" if stages else pooling


def rgb(values) -> tuple[float, float, float]:
    """Three floats, one per colour channel (a mean or a standard deviation)."""
    red, green, blue = (float(v) for v in values)
    return red, green, blue


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize_size``, center-crop ``input_size``, normalize."""

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        # timm's rule (timm/data/transforms_factory.py): scale = floor(size / crop_pct). The
        # epsilon keeps crop_pct = crop / resize (torchvision's configs) from landing a float
        # rounding error below the integer it came from (17 / (17 / 25) = 24.999...).
        return math.floor(self.input_size / self.crop_pct + 1e-6)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(int(d["input_size"]), float(d["crop_pct"]), str(d["interpolation"]), rgb(d["mean"]), rgb(d["std"]))


class BackboneConfig(Protocol):
    """What a feature space takes from a backbone's config (``tlx.extractor.config.BackboneCfg``)."""

    name: str
    feature_dim: int
    preprocessing: Preprocessing
    weights_id: str
    weights_sha256: str


@dataclass(frozen=True)
class FeatureSpace:
    """Backbone + weights + preprocessing + pooling: features from two different spaces never mix."""

    backbone: str
    weights_sha256: str
    weights_id: str
    preprocessing: Preprocessing
    pooling: str
    feature_dim: int  # width of the stored vectors (2x the map's channels for avgmax)
    precision: str = "fp32"  # autocast: fp16/bf16 vectors differ from fp32 ones by far more than rounding
    stages: int = 0  # the pooled outputs of the last ``stages`` inner stages follow the final features
    store_dtype: str = "float32"  # float16 halves the cache: its vectors are the float32 ones rounded

    @classmethod
    def from_backbone(
        cls,
        cfg: BackboneConfig,
        pooling: str,
        precision: str = "fp32",
        stage_widths: tuple[int, ...] = (),
        store_dtype: str = "float32",
    ) -> FeatureSpace:
        """``stage_widths``: the channels of each pooled inner stage (``pooling.stage_widths``)."""
        width = (cfg.feature_dim + sum(stage_widths)) * (2 if pooling == "avgmax" else 1)
        pre, stages = cfg.preprocessing, len(stage_widths)
        return cls(cfg.name, cfg.weights_sha256, cfg.weights_id, pre, pooling, width, precision, stages, store_dtype)

    @property
    def pool_label(self) -> str:
        """The pooling as cache names show it: ``avg``, or ``avg-s3`` with three inner stages."""
        return pool_label(self.pooling, self.stages)

    def identity(self) -> dict:
        """The fields that decide whether two feature vectors are comparable."""
        ident: dict = {
            "backbone": self.backbone,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing.to_dict(),
            "pooling": self.pooling,
            "precision": self.precision,
        }
        # Only when used, so that the spaces (and cache names) of older caches keep their key.
        if self.stages:
            ident["stages"] = self.stages
        if self.store_dtype != "float32":
            ident["store_dtype"] = self.store_dtype
        return ident

    @property
    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {**self.identity(), "weights_id": self.weights_id, "feature_dim": self.feature_dim, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpace:
        return cls(
            backbone=d["backbone"],
            weights_sha256=d["weights_sha256"],
            weights_id=d.get("weights_id", ""),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            pooling=d["pooling"],
            feature_dim=int(d["feature_dim"]),
            precision=str(d.get("precision", "fp32")),
            stages=int(d.get("stages", 0)),
            store_dtype=str(d.get("store_dtype", "float32")),
        )

    def difference(self, other: FeatureSpace) -> str:
        """A short human sentence naming the first field that differs ('' when equal)."""
        mine, theirs = self.identity(), other.identity()
        for name in ("backbone", "weights_sha256", "pooling", "stages", "precision", "store_dtype", "preprocessing"):
            default = "float32" if name == "store_dtype" else 0
            if mine.get(name, default) != theirs.get(name, default):
                return f"{name} is {theirs.get(name, default)!r} there but {mine.get(name, default)!r} here"
        return ""
