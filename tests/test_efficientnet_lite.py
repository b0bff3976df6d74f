"""The native EfficientNet-Lite is timm's ``tf_efficientnet_lite<v>``: same state dict, same stages,
same preprocessing, bit-identical features; and building it does not import timm."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tlx.extractor.backbones import efficientnet_lite, lite_weights_file
from tlx.extractor.engine import FeatureRunner
from tlx.extractor.networks import Backbone, lukemelas_to_timm, timm_backbone, timm_preprocessing

timm = pytest.importorskip("timm")


def timm_reference(variant: int, state: dict | None = None) -> Backbone:
    """The backbone as tlx built it with timm before: timm's model, its config, its stage list."""
    from dataclasses import replace

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if state is not None:
        model.load_state_dict(state)
    native = efficientnet_lite(variant, pretrained=False)
    cfg = replace(native.cfg, preprocessing=timm_preprocessing(model.pretrained_cfg), feature_dim=model.num_features)
    return timm_backbone(model.eval(), cfg)


def assert_same_network(native: Backbone, ref: Backbone, size: int) -> None:
    ns, ts = native.body.state_dict(), ref.body.state_dict()
    assert list(ns) == list(ts)
    assert [v.shape for v in ns.values()] == [v.shape for v in ts.values()]
    assert native.stages == ref.stages
    assert native.cfg.preprocessing == ref.cfg.preprocessing
    assert native.cfg.feature_dim == ref.cfg.feature_dim == 1280
    assert isinstance(native.imagenet_head, torch.nn.Linear) and isinstance(ref.imagenet_head, torch.nn.Linear)
    assert torch.equal(native.imagenet_head.weight, ref.imagenet_head.weight)
    torch.manual_seed(1)
    # An odd size too: the strided convs' "same" padding is asymmetric there.
    for x in (torch.randn(2, 3, size, size), torch.randn(1, 3, size + 1, size - 3)):
        with torch.inference_mode():
            a, b = native.body(x), ref.body(x)
        assert a.shape == b.shape
        assert torch.equal(a, b), f"max |diff| {(a - b).abs().max().item()}"  # same ops, same order: bitwise


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_random_init_matches_timm(variant):
    torch.manual_seed(0)
    native = efficientnet_lite(variant, pretrained=False)
    state = {k.removeprefix("model."): v for k, v in native.body.state_dict().items()}
    head = native.imagenet_head
    assert isinstance(head, torch.nn.Linear)
    state |= {"classifier.weight": head.weight, "classifier.bias": head.bias}
    ref = timm_reference(variant, state)
    size = native.cfg.preprocessing.input_size
    assert size == {0: 224, 1: 240, 2: 260}[variant]
    assert native.cfg.architecture == f"timm:tf_efficientnet_lite{variant}"
    assert_same_network(native, ref, 96)
    assert [len(s) for s in native.stages] == [len(s) for s in ref.stages] and len(native.stages) == 8


@pytest.fixture(scope="module")
def lite0_pair():
    native = efficientnet_lite(0)
    state = torch.load(lite_weights_file(0), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ref = timm_reference(0, lukemelas_to_timm(state, model))
    return native, ref


@pytest.mark.real_weights
def test_real_weights_match_timm(lite0_pair):
    native, ref = lite0_pair
    assert_same_network(native, ref, 224)


@pytest.mark.real_weights
@pytest.mark.parametrize("stages", [0, 3])
def test_real_weights_pooled_features_match_timm(lite0_pair, stages):
    native, ref = lite0_pair
    gen = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8, generator=gen)
    a = FeatureRunner(native, "avgmax", device="cpu", stages=stages).forward_uint8(images)
    b = FeatureRunner(ref, "avgmax", device="cpu", stages=stages).forward_uint8(images)
    assert a.shape == b.shape == (3, 2 * (1280 + (80 + 112 + 192 if stages else 0)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.real_weights
def test_extract_with_the_default_backbone_does_not_import_timm(folder_data, tmp_path):
    from conftest import REPO, subprocess_env

    code = (
        "import sys; from typer.testing import CliRunner; from tlx.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['extract', {str(folder_data)!r}, '--backbone', 'efficientnet_lite0', "
        "'--engine', 'eager', '--workers', '0', '--quiet'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('TIMM' if 'timm' in sys.modules else 'NO-TIMM')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=REPO,
        env=subprocess_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-TIMM"
    assert list((tmp_path / "cache").glob("*-efficientnet_lite0-avg-*.h5"))
