"""One real torchvision and one real timm architecture, randomly initialised (no download), through
the whole job: extract, fit-head, finetune and export. The random weights are saved to a
.safetensors file and passed with --weights, as a user would pass their own."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_folder_dataset

ARCHS = ["torchvision:mobilenet_v3_small", "timm:test_efficientnet"]
FAST = ["--workers", "0", "--quiet", "--json"]


def _random_weights(backbone: str, path):
    """The whole classifier's state dict, as the builders load it, from a seeded random init."""
    from safetensors.torch import save_file

    family, arch = backbone.split(":")
    torch.manual_seed(0)
    if family == "torchvision":
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
    else:
        import timm

        model = timm.create_model(arch, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("backbone", ARCHS)
def test_extract_fit_head_finetune_export(cli, tmp_path, monkeypatch, backbone):
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    data = make_folder_dataset(tmp_path / "data", per_class=4, size=(48, 40))
    weights = _random_weights(backbone, tmp_path / "random.safetensors")

    extracted = cli("extract", data, "--backbone", backbone, "--weights", weights, "--batch-size", "8", *FAST)
    assert extracted.exit_code == 0, extracted.stderr
    cache = extracted.json()
    assert (cache["backbone"], cache["n_images"], cache["n_failed"]) == (backbone, 8, 0)

    head = cli("fit-head", "--features", cache["path"], "--clf", "linear", "--json")
    assert head.exit_code == 0, head.stderr
    head_run = head.json()["run"]

    tuned = cli(
        "finetune",
        data,
        "--backbone",
        backbone,
        "--weights",
        weights,
        "--unfreeze",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--no-augment",
        "--out",
        tmp_path / "ft",
        *FAST,
    )
    assert tuned.exit_code == 0, tuned.stderr
    assert (tmp_path / "ft" / "model.safetensors").is_file()

    for kind, run in (("head", head_run), ("finetune", tmp_path / "ft")):
        out = tmp_path / f"{kind}.pt"
        exported = cli("export", "--run", run, "--format", "torchscript", "--out", out)
        assert exported.exit_code == 0, (exported.stderr, repr(exported.exception))
        side = json.loads((tmp_path / f"{kind}.pt.json").read_text())
        assert side["classes"] == ["ants", "bees"] and out.stat().st_size > 0
