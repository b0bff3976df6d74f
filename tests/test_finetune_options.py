"""Fine-tune options are declared once, by FinetuneConfig: the Python API and `tlx finetune`
take its names, normalize by its field types, and show its defaults and help texts."""

from __future__ import annotations

from dataclasses import fields
from enum import Enum

import pytest


def _finetune_command_params() -> dict:
    import typer

    from tlx.cli.app import app

    command = typer.main.get_command(app).commands["finetune"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_every_config_field_is_a_cli_option_with_the_configs_help_and_default():
    from tlx.finetune.config import FinetuneConfig, option_help

    params = _finetune_command_params()
    for f in fields(FinetuneConfig):
        assert f.name in params, f"FinetuneConfig.{f.name} is no option of tlx finetune"
        if f.name == "data":
            continue
        assert params[f.name].help == option_help(f.name), f.name
        shown = f.metadata["shown"] or str(f.default)
        assert f"[default: {shown}]" in option_help(f.name), f.name
    assert "[default: 10]" in option_help("epochs") and "[default: 32]" in option_help("batch_size")


def test_an_option_that_is_no_config_field_is_refused_before_any_work(tmp_path):
    from tlx.finetune.train import finetune

    with pytest.raises(TypeError, match=r"unknown option.*epoch\b.*epochs"):
        finetune(tmp_path / "missing", epoch=3, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_given_values_are_normalized_by_the_field_types():
    from tlx.finetune.config import explicit_options

    class Choice(str, Enum):
        sgd = "sgd"

    got = explicit_options(
        {"epochs": "3", "lr": "1e-3", "augment": 0, "unfreeze": " ALL ", "optimizer": Choice.sgd, "seed": None}
    )
    assert got == {"epochs": 3, "lr": 1e-3, "augment": False, "unfreeze": "all", "optimizer": "sgd"}
    assert type(got["epochs"]) is int and type(got["lr"]) is float


def test_a_config_gives_every_option_and_keyword_options_override_it(tmp_path, monkeypatch):
    import tlx.finetune.train as train
    from tlx.finetune.config import FinetuneConfig

    seen = {}

    def fake_run(procs, device, reporter, started, resume, out, workers, explicit, on_step):
        seen.update(explicit)
        return "result"

    monkeypatch.setattr(train, "_run", fake_run)
    cfg = FinetuneConfig(data=str(tmp_path), backbone="tiny_cnn", epochs=2)
    assert train.finetune(config=cfg, epochs=5, workers=0, device="cpu") == "result"
    assert seen["epochs"] == 5 and seen["backbone"] == "tiny_cnn" and seen["data"] == str(tmp_path.resolve())
    assert set(seen) == {f.name for f in fields(FinetuneConfig)}
