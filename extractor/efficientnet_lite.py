"""EfficientNet-Lite0/1/2 in plain torch: the network timm builds as ``tf_efficientnet_lite<v>``.

Why not timm itself: ``import timm`` costs 2-4 s on every ``tlx extract``/``predict``/``finetune``
(``timm.layers`` imports ``torchvision.ops``, which imports ``torch._dynamo``), although the
network is a plain stack of convolutions. This module rebuilds it layer for layer, so that:

- ``state_dict()`` has timm's keys, in timm's order, with timm's shapes (the positional
  renaming of lukemelas's weights and every saved fine-tune keep working);
- the modules tlx names (``conv_stem``, ``bn1``, ``blocks.<stage>.<block>.conv_pw`` ...,
  ``conv_head``, ``bn2``) are where timm has them, so stage lists and stage taps are unchanged;
- the forward pass runs the same ops in the same order (TF "same" padding, BatchNorm with
  eps 1e-3, ReLU6, residuals), so features equal timm's bit for bit.

Reference: timm ``models/efficientnet.py`` (``_gen_efficientnet_lite``, ``EfficientNet``),
``models/_efficientnet_blocks.py``, ``models/_efficientnet_builder.py``, ``layers/padding.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..cache.space import Preprocessing


@dataclass(frozen=True)
class LiteVariant:
    channel_multiplier: float
    depth_multiplier: float
    preprocessing: Preprocessing  # timm's pretrained_cfg for tf_efficientnet_lite<v>.in1k


def _pre(size: int, crop_pct: float) -> Preprocessing:
    return Preprocessing(size, crop_pct, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


VARIANTS = {
    0: LiteVariant(1.0, 1.0, _pre(224, 0.875)),
    1: LiteVariant(1.0, 1.1, _pre(240, 0.882)),
    2: LiteVariant(1.1, 1.2, _pre(260, 0.890)),
}

# timm's arch_def for Lite: (block, repeats, kernel, stride, expansion, out channels) per stage.
ARCH = [
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32  # fixed: Lite does not scale the stem ...
NUM_FEATURES = 1280  # ... nor the head
BN_EPS = 1e-3  # TensorFlow's BatchNorm default, which the tf_ weights were trained with


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of ``divisor``, never more than 10 % below ``value`` (timm's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


def stage_repeats(variant: int) -> list[int]:
    """Blocks per stage: repeats scaled up (ceil) by the depth multiplier, except the first and
    last stage (timm's ``fix_first_last``)."""
    depth = VARIANTS[variant].depth_multiplier
    repeats = [r for _, r, *_ in ARCH]
    return [r if i in (0, len(ARCH) - 1) else math.ceil(r * depth) for i, r in enumerate(repeats)]


def _same_padding(size: int, kernel: int, stride: int) -> int:
    if isinstance(size, torch.Tensor):  # traced for export: keep the arithmetic in the graph
        return torch.clamp(((size / stride).ceil() - 1) * stride + kernel - size, min=0)
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


class Conv2dSame(nn.Conv2d):
    """TensorFlow's "SAME" padding for a strided conv: computed from the input size at run time,
    the odd pixel going to the bottom/right (asymmetric, which a static ``padding=`` cannot say)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.size()[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h, pad_w = _same_padding(ih, kh, sh), _same_padding(iw, kw, sw)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A bias-free conv with "SAME" padding: static and symmetric at stride 1 (odd kernels), as timm does."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then ReLU6 (or nothing) in one module, as timm's ``BatchNormAct2d``: the
    activation has no parameters, so the state dict keys stay ``<name>.weight`` etc."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    """Stage 0: depthwise conv, BN+ReLU6, pointwise conv, BN (no expansion)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: 1x1 expand, BN+ReLU6, depthwise, BN+ReLU6, 1x1 project, BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """timm's ``EfficientNet`` as ``tf_efficientnet_lite<variant>`` builds it (inference path:
    no dropout, no drop path). ``forward_features`` gives the map before global pooling."""

    def __init__(self, variant: int, num_classes: int = 1000):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, not {variant!r}")
        width = VARIANTS[variant].channel_multiplier
        self.conv_stem = conv(3, STEM_CHANNELS, 3, 2)
        self.bn1 = BatchNormAct2d(STEM_CHANNELS)
        cin, stages = STEM_CHANNELS, []
        for (kind, _, kernel, stride, expansion, channels), repeats in zip(ARCH, stage_repeats(variant), strict=True):
            cout = make_divisible(channels * width)
            blocks: list[nn.Module] = []
            for i in range(repeats):
                s = stride if i == 0 else 1
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(cin, cout, kernel, s))
                else:
                    blocks.append(InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(cin, NUM_FEATURES, 1)
        self.bn2 = BatchNormAct2d(NUM_FEATURES)
        self.num_features = NUM_FEATURES
        self.classifier: nn.Module = nn.Linear(NUM_FEATURES, num_classes) if num_classes else nn.Identity()
        self.apply(_init_weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean((2, 3)))

    def stages(self) -> list[list[str]]:
        """Parameter names stage by stage, as timm's coarse ``group_matcher`` groups them:
        the stem, one group per block stage, the last stage together with the head conv."""
        params = [name for name, _ in self.named_parameters() if not name.startswith("classifier.")]
        groups = [[n for n in params if n.startswith(("conv_stem.", "bn1."))]]
        groups += [[n for n in params if n.startswith(f"blocks.{i}.")] for i in range(len(self.blocks))]
        groups[-1] += [n for n in params if n.startswith(("conv_head.", "bn2."))]
        return groups


def _init_weight(module: nn.Module) -> None:
    """TensorFlow's EfficientNet init (timm's ``_init_weight_goog``), for random-init backbones."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.weight.size(0))
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
