"""Global pooling of a backbone's feature maps into one vector per image: the final map, and
optionally the last K inner stages of the body (multi-stage pooling), all from one forward pass."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..cache.space import FeatureSpace
from ..errors import TlxError


class GlobalPool(nn.Module):
    """``avg``, ``max`` or ``avgmax`` (both concatenated, so twice as wide), over convolutional
    maps (N, C, H, W) or transformer tokens (N, L, C)."""

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
    """Backbone body followed by global pooling: images in, pooled pre-logits features out.
    ``taps`` name submodules of the body (``stage_taps``) whose outputs are pooled too and
    concatenated after the final features; forward hooks catch them during the body's own
    pass, so the stages cost no second pass and no change to the body."""

    def __init__(self, body: nn.Module, pooling: str = "avg", taps: list[str] | tuple[str, ...] = ()):
        super().__init__()
        self.body = body
        self.pool = GlobalPool(pooling)
        self.taps = list(taps)
        self._caught: dict[str, torch.Tensor] = {}
        self._hooks = [body.get_submodule(name).register_forward_hook(self._catcher(name)) for name in self.taps]

    def _catcher(self, name: str):
        def hook(_module, _inputs, output):
            self._caught[name] = output

        return hook

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        final = self.pool(self.body(images))
        if not self.taps:
            return final.float()
        pooled = [final] + [self.pool(self._caught.pop(name)) for name in self.taps]
        return torch.cat([p.float() for p in pooled], dim=1)

    def remove_taps(self) -> None:
        """Detach the hooks from the body (which may be shared with another extractor)."""
        for handle in self._hooks:
            handle.remove()


class Autocast(nn.Module):
    """A feature extractor run under autocast at ``precision`` (fp32: as it is), so that a graph
    exported from it keeps the mixed precision that eager applies with ``--precision``."""

    def __init__(self, model: nn.Module, device: str, precision: str):
        super().__init__()
        self.model, self.device, self.precision = model, device, precision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp32":
            return self.model(x)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        with torch.autocast(self.device, dtype=dtype):
            return self.model(x).float()


def _stage_module(stage: list[str]) -> str:
    """The deepest module holding every parameter of a stage ('' when only the root does)."""
    owners = [name.split(".")[:-1] for name in stage]
    common = itertools.takewhile(lambda names: len(set(names)) == 1, zip(*owners, strict=False))
    return ".".join(names[0] for names in common)


def stage_taps(backbone, stages: int) -> list[str]:
    """The modules whose outputs are the body's last ``stages`` inner stages (the registry's
    stage list without its final stage, which makes the final features), shallow to deep."""
    if stages == 0:
        return []
    inner = [_stage_module(s) for s in backbone.stages[:-1]]
    usable = len(list(itertools.takewhile(bool, reversed(inner))))  # the last stages that are modules of their own
    if not 0 < stages <= usable:
        raise TlxError(
            f"--stages {stages}: {backbone.cfg.name} has {usable} inner stage(s) that can be pooled besides its "
            f"final features; pass --stages between 1 and {usable}, or 0 for the final features alone"
        )
    return inner[len(inner) - stages :]


@torch.inference_mode()
def stage_widths(backbone, taps: list[str]) -> tuple[int, ...]:
    """Channels of each tapped stage, from one forward pass of a blank image."""
    size = backbone.cfg.preprocessing.input_size
    extractor = FeatureExtractor(backbone.body, "avg", taps)
    was_training = backbone.body.training
    try:
        backbone.body.eval()(torch.zeros(1, 3, size, size))
        return tuple(int(extractor.pool(extractor._caught[name]).shape[1]) for name in taps)
    finally:
        backbone.body.train(was_training)
        extractor.remove_taps()


def space_for(
    backbone, pooling: str, precision: str = "fp32", stages: int = 0, store_dtype: str = "float32"
) -> FeatureSpace:
    """The feature space a backbone makes with these settings."""
    widths = stage_widths(backbone, stage_taps(backbone, stages)) if stages else ()
    return FeatureSpace.from_backbone(backbone.cfg, pooling, precision, widths, store_dtype)
