"""The torch side of the backbones: the ``Backbone`` module, weight-file loading, and the pieces
each family needs. ``backbones.py`` imports it inside the builders, so listing them imports no torch."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cache.space import Preprocessing, rgb
from ..errors import TlxError, WeightsUnavailableError
from .config import BackboneCfg


class Backbone(nn.Module):
    """``body(images)`` gives the final feature map; ``stages`` lists the body's parameter
    names stage by stage, shallow to deep, so fine-tuning can unfreeze the last N."""

    def __init__(
        self, cfg: BackboneCfg, body: nn.Module, stages: list[list[str]], imagenet_head: nn.Module | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.body = body
        self.stages = [list(s) for s in stages if s]
        # The 1000-way ImageNet classifier, kept only to prove that pretrained weights are real.
        self.imagenet_head = imagenet_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def sha256_state_dict(module: nn.Module) -> str:
    """Identity of in-memory weights (random inits): hash of every tensor, in order."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file; never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} does not exist: pass --weights with the path of a .pth or .safetensors state dict"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise WeightsUnavailableError(
                f"--weights {path} is not a valid .safetensors file ({type(exc).__name__}: {exc}): "
                "pass a file saved with safetensors.torch.save_file, or a .pth state dict"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code in it, or not a torch file at all
        raise WeightsUnavailableError(
            f"{path} is not a plain state dict that loads with weights_only=True ({type(exc).__name__}): "
            "save it with torch.save(model.state_dict(), ...) or as .safetensors"
        ) from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    return obj


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; classifier keys may be missing or extra, body keys may not."""
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    body_missing = [k for k in missing if not k.startswith(("fc.", "classifier.", "head.", "_fc."))]
    if body_missing:
        raise WeightsUnavailableError(
            f"{source} does not fit this architecture: {len(body_missing)} of its tensors are missing or "
            f"have another shape (first: {body_missing[0]!r}); pass a state dict saved from the same model"
        )
    model.load_state_dict(matched, strict=False)


class TimmBody(nn.Module):
    """A timm model whose forward is ``forward_features`` (the map before global pooling); its
    parameters keep timm's names under ``model.`` (stage lists, saved fine-tunes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = model  # a timm model: forward_features is timm's API, not nn.Module's

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def timm_backbone(model: Any, cfg: BackboneCfg) -> Backbone:
    from timm.models import group_parameters

    head = None
    if getattr(model, "num_classes", 0):
        classifier = model.get_classifier()
        head = classifier if isinstance(classifier, nn.Module) else None
        model.reset_classifier(0)
    groups = group_parameters(model, model.group_matcher(coarse=True))
    stages = [["model." + n for n in names] for _, names in sorted(groups.items())]
    return Backbone(cfg, TimmBody(model), stages, head)


def timm_preprocessing(pretrained_cfg: dict) -> Preprocessing:
    return Preprocessing(
        input_size=int(pretrained_cfg["input_size"][-1]),
        crop_pct=float(pretrained_cfg.get("crop_pct", 0.875)),
        interpolation=str(pretrained_cfg.get("interpolation", "bicubic")),
        mean=rgb(pretrained_cfg["mean"]),
        std=rgb(pretrained_cfg["std"]),
    )


# lukemelas's EfficientNet-PyTorch names -> timm's: the network's own modules, then those of
# each block. A depthwise-separable block (Lite's first stage) has no expansion conv, so its
# BatchNorms shift down by one against an inverted residual's.
LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
LUKEMELAS_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
LUKEMELAS_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lukemelas_to_timm(state: dict[str, torch.Tensor], stage_sizes: list[int]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas state dict to timm's names: flat blocks (``_blocks.7._bn1.weight``) nest by
    stage (``blocks.3.1.bn2.weight``, ``stage_sizes`` blocks per stage). A key that fits no rule is
    refused by name, so a foreign file fails here rather than load into the wrong place."""
    modules = dict(LUKEMELAS_TOP)  # each module's lukemelas name -> timm's
    positions = [(stage, j) for stage, size in enumerate(stage_sizes) for j in range(size)]
    for index, (stage, j) in enumerate(positions):
        for old, new in (LUKEMELAS_DS_BLOCK if stage == 0 else LUKEMELAS_IR_BLOCK).items():
            modules[f"_blocks.{index}.{old}"] = f"blocks.{stage}.{j}.{new}"
    renamed = {}
    for key, tensor in state.items():
        parts = key.split(".", 3 if key.startswith("_blocks.") else 1)
        module = ".".join(parts[:-1])  # the module's lukemelas name; the last part names the tensor in it
        if module not in modules:
            raise WeightsUnavailableError(f"EfficientNet-Lite weights: unexpected tensor {key!r}")
        renamed[f"{modules[module]}.{parts[-1]}"] = tensor
    return renamed


def hf_weights_file(arch: str, pretrained_cfg) -> str:
    """Path of a timm model's weights in the Hugging Face cache, downloading when possible."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        raise WeightsUnavailableError(f"timm:{arch} has no downloadable pretrained weights; pass --weights FILE")
    hub_id = hub_id.split("hf-hub:")[-1]
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import HF_HUB_CACHE

    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return hf_hub_download(hub_id, filename)
        except Exception as exc:  # offline, missing file, gated repo ...
            errors.append(f"{filename}: {type(exc).__name__}")
    raise WeightsUnavailableError(
        f"timm:{arch} needs its pretrained weights from the Hugging Face repo {hub_id}, which are not in "
        f"{HF_HUB_CACHE} and could not be downloaded ({'; '.join(errors)}): download them on a machine with "
        f"network (huggingface-cli download {hub_id}) and copy the cache, or pass --weights FILE"
    )


def torchvision_backbone(model: nn.Module, arch: str, cfg: BackboneCfg) -> Backbone:
    """A torchvision classifier split into its feature-map body (its width measured on a blank
    image) and its ImageNet classifier."""
    names = [n for n, _ in model.named_children()]
    classifier: nn.Module | None
    if "avgpool" in names and "fc" in names:  # ResNet, ResNeXt, Wide ResNet, RegNet...
        cut = names.index("avgpool")
        # nn.Sequential keeps names only from an OrderedDict (a plain dict is taken as one module)
        body = nn.Sequential(OrderedDict((n, m) for n, m in model.named_children() if names.index(n) < cut))
        classifier = model.get_submodule("fc")
    elif "features" in names:  # VGG, AlexNet, MobileNet, EfficientNet, DenseNet, SqueezeNet, ConvNeXt...
        # The children of `features` become the body's own children, so each can be a stage.
        body = nn.Sequential(OrderedDict(model.get_submodule("features").named_children()))
        if arch.startswith("densenet"):  # DenseNet applies its final ReLU in forward()
            body.add_module("relu", nn.ReLU())
        classifier = getattr(model, "classifier", None)
        if isinstance(classifier, nn.Sequential):
            linears = [m for m in classifier if isinstance(m, nn.Linear)]
            classifier = linears[-1] if len(linears) == 1 else None
        classifier = classifier if isinstance(classifier, nn.Linear) else None
    else:
        raise TlxError(
            f"torchvision:{arch} has no convolutional feature map that tlx knows how to take "
            "(supported: models with .features or avgpool+fc); use its timm version instead, e.g. timm:" + arch
        )
    size = cfg.preprocessing.input_size
    with torch.inference_mode():
        width = body(torch.zeros(1, 3, size, size)).shape[1]
    return Backbone(replace(cfg, feature_dim=int(width)), body, sequential_stages(body), classifier)


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def sequential_stages(body: nn.Module) -> list[list[str]]:
    """Parameter names of a torchvision ``features`` sequence, stage by stage, shallow to deep. A
    child with children (an inverted residual, a dense block, a Fire module) is a stage; single
    layers group up to the next pooling (VGG's conv blocks); a trailing lone norm (DenseNet's
    norm5) joins the last block rather than make `--unfreeze 1` train a norm layer alone."""
    stages: list[list[str]] = []  # empty ones included: Backbone drops them
    group: list[str] = []
    norms_only = True
    for name, child in body.named_children():
        params = [f"{name}.{p}" for p, _ in child.named_parameters()]
        if any(True for _ in child.children()):
            stages += [group, params]
            group, norms_only = [], True
            continue
        group += params
        norms_only = norms_only and (not params or isinstance(child, _NORMS))
        if isinstance(child, _POOLS) and group:
            stages.append(group)
            group, norms_only = [], True
    if stages and norms_only:
        stages[-1] += group
    else:
        stages.append(group)
    return stages


def torchvision_weights_file(arch: str, weights_enum) -> str:
    from urllib.parse import urlparse

    url = weights_enum.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if not target.is_file():
        try:
            torch.hub.download_url_to_file(url, str(target), progress=False)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"torchvision:{arch} needs its pretrained weights {target.name}, not found at {target} and not "
                f"downloadable ({type(exc).__name__}): "
                f"download {url} to {target} (or set TORCH_HOME), or pass --weights FILE"
            ) from None
    return str(target)


def tiny_cnn_body() -> nn.Sequential:
    """Three strided conv stages, 32-wide: a fast stand-in with the real interface."""

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(OrderedDict(stem=block(3, 8), stage1=block(8, 16), stage2=block(16, 32)))
