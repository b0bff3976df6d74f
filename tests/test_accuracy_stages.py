"""Multi-stage pooling: ``--stages K`` appends the pooled last K inner stages to the final
features, from one forward pass, as a feature space of its own that predict and export rebuild."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from test_cli_extract import FAST, assert_user_error

from tlx.cache.features import load_features
from tlx.extractor.pooling import FeatureExtractor, space_for, stage_taps
from tlx.extractor.registry import get_backbone


def test_stage_taps_follow_the_registry_stage_list():
    net = get_backbone("tiny_cnn").build()
    assert stage_taps(net, 0) == []
    assert stage_taps(net, 1) == ["stage1"]
    assert stage_taps(net, 2) == ["stem", "stage1"]
    lite = get_backbone("efficientnet_lite0").build(pretrained=False)
    assert stage_taps(lite, 3) == ["model.blocks.3", "model.blocks.4", "model.blocks.5"]
    assert space_for(lite, "avg", stages=3).feature_dim == 1280 + 80 + 112 + 192
    assert space_for(lite, "avgmax", stages=1).feature_dim == 2 * (1280 + 192)


def test_stages_are_the_pooled_stage_outputs_from_one_forward_pass():
    net = get_backbone("tiny_cnn").build()
    x = torch.randn(3, 3, 32, 32)
    calls = []
    net.body.register_forward_pre_hook(lambda *_: calls.append(1))
    with torch.inference_mode():
        got = FeatureExtractor(net.body, "avgmax", stage_taps(net, 2)).eval()(x)
        assert len(calls) == 1
        stem = net.body.stem(x)
        s1 = net.body.stage1(stem)
        final = net.body.stage2(s1)

    def pool(t):
        return torch.cat([t.mean((2, 3)), t.amax((2, 3))], 1)

    want = torch.cat([pool(final), pool(stem), pool(s1)], 1)
    assert got.shape == (3, 2 * (32 + 8 + 16))
    torch.testing.assert_close(got, want)


def test_stages_are_part_of_the_feature_space(cli, folder_data, tmp_path):
    cache = tmp_path / "cache"
    plain = cli("extract", folder_data, *FAST, "--cache-dir", cache, "--json").json()
    staged = cli("extract", folder_data, *FAST, "--stages", "2", "--cache-dir", cache, "--json").json()
    assert plain["path"] != staged["path"] and "-avg-s2-" in staged["path"]
    assert (plain["feature_dim"], staged["feature_dim"]) == (32, 56)
    a, b = load_features(plain["path"]), load_features(staged["path"])
    assert b.space.stages == 2 and a.space.stages == 0 and a.space.key != b.space.key
    assert a.paths == b.paths
    np.testing.assert_allclose(b.X[:, :32], a.X, rtol=1e-5, atol=1e-6)  # the final features come first
    again = cli("extract", folder_data, *FAST, "--stages", "2", "--cache-dir", cache, "--json").json()
    assert again["n_new"] == 0 and again["path"] == staged["path"]
    with h5py.File(staged["path"]) as f:
        assert f.attrs["stages"] == 2
    info = cli("info", cache)
    assert info.exit_code == 0 and "avg-s2" in info.stdout


def test_too_many_stages_is_refused(cli, folder_data, tmp_path):
    res = cli("extract", folder_data, *FAST, "--stages", "3", "--cache-dir", tmp_path / "c")
    assert_user_error(res, "--stages 3", "between 1 and 2")


@pytest.mark.parametrize("fmt", ["torchscript"])
def test_predict_and_export_rebuild_the_stages(cli, folder_data, tmp_path, fmt):
    from conftest import write_image

    cache = tmp_path / "cache"
    made = cli("extract", folder_data, *FAST, "--stages", "1", "--cache-dir", cache, "--json").json()
    fit = cli("fit-head", "--features", made["path"], "--out", tmp_path / "run", "--json", "-q")
    assert fit.exit_code == 0, fit.stderr
    new = write_image(tmp_path / "new" / "x.png", seed=99)
    out = cli("predict", new, folder_data / "ants", "--run", tmp_path / "run", "--json", "--workers", "0", "-q")
    assert out.exit_code == 0, out.stderr
    assert out.json()["n_computed"] == 1 and out.json()["n_reused"] == 3
    exp = cli("export", "--run", tmp_path / "run", "--format", fmt, "--out", tmp_path / "m.pt", "--json")
    assert exp.exit_code == 0, exp.stderr
    assert exp.json()["max_abs_diff"] is not None and exp.json()["max_abs_diff"] < 1e-4
