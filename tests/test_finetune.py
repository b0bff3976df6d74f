"""``tlx finetune``: freezing rules, LP-FT initialisation, checkpoint + resume after kill -9,
two processes under torchrun (gloo) against one, the run folder, and the exit codes.

Everything runs the 32 px ``tiny_cnn`` backbone on a few dozen generated PNGs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RUN_KEYS, make_folder_dataset, subprocess_env

TINY = [
    "--backbone",
    "tiny_cnn",
    "--workers",
    "0",
    "--batch-size",
    "8",
    "--lr",
    "0.01",
    "--head-lr",
    "0.05",
    "--quiet",
    "--json",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two classes x 20 PNGs: the seeded split gives 32 train / 8 val images."""
    return make_folder_dataset(tmp_path_factory.mktemp("ft") / "data", per_class=20)


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TLX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TLX_CACHE_DIR", str(tmp_path / "cache"))


def _net(unfreeze):
    from tlx.extractor.registry import get_backbone
    from tlx.finetune.model import apply_freezing, build_net, parse_unfreeze

    backbone = get_backbone("tiny_cnn").build()
    net = build_net(backbone, "avg", 2)
    trainable = apply_freezing(net, backbone.stages, parse_unfreeze(unfreeze, len(backbone.stages), "tiny_cnn"))
    return backbone, net, trainable


# --------------------------------------------------------------------------- freezing rules


@pytest.mark.parametrize(
    "unfreeze, expected_stages",
    [
        (0, []),
        (1, ["stage2"]),
        (2, ["stage1", "stage2"]),
        (3, ["stem", "stage1", "stage2"]),
        ("all", ["stem", "stage1", "stage2"]),
    ],
)
@pytest.mark.parametrize("train_bn", [False, True])
def test_unfreeze_decides_which_parameters_get_gradients_and_which_batchnorms_train(
    unfreeze, expected_stages, train_bn
):
    from tlx.finetune.model import set_train_mode

    _, net, trainable = _net(unfreeze)
    set_train_mode(net, trainable, train_bn)
    loss = net(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    got = {n.split(".")[1] for n, p in net.named_parameters() if n.startswith("body.") and p.grad is not None}
    assert got == set(expected_stages)
    assert all(p.grad is not None for p in net.head.parameters())
    for name, m in net.body.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.training == (train_bn and name.split(".")[0] in expected_stages), name
    assert net.head.training


def test_unfreeze_more_stages_than_the_backbone_has_is_refused():
    from tlx.errors import TlxError
    from tlx.finetune.model import parse_unfreeze

    with pytest.raises(TlxError, match="tiny_cnn has only 3 stages"):
        parse_unfreeze(4, 3, "tiny_cnn")
    assert parse_unfreeze("all", 3, "tiny_cnn") is None


# --------------------------------------------------------------------------- LP-FT


def test_folded_linear_head_gives_the_fitted_heads_probabilities_before_any_step(data):
    from tlx.heads.linear import LinearHead

    _, net, _ = _net(1)
    net.eval()
    x = torch.randn(24, 3, 32, 32)
    with torch.no_grad():
        feats = net.features(x).numpy()
    y = np.arange(24) % 2
    head = LinearHead(weight_decay=1e-2).fit(feats, y)
    W, b, shift, scale = head.linear_form()
    assert shift is not None and scale is not None  # standardized: the fold really has work to do
    from tlx.finetune.model import fold_linear_head

    fold_linear_head(net.head, W, b, shift, scale)
    with torch.no_grad():
        ours = torch.softmax(net(x), 1).numpy()
    np.testing.assert_allclose(ours, head.predict_proba(feats), atol=1e-5)


def test_init_head_from_a_fit_head_run_end_to_end(cli, data, tmp_path):
    assert cli("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--quiet").exit_code == 0
    fit = cli("fit-head", "--clf", "linear", "--out", tmp_path / "head", "--quiet", "--json")
    assert fit.exit_code == 0, fit.stderr
    head_acc = json.loads((tmp_path / "head" / "metrics.json").read_text())["val_accuracy"]
    # no DATA: the dataset of the head's cache; backbone and pooling come from the head run.
    r = cli(
        "finetune",
        "--init-head",
        tmp_path / "head",
        "--epochs",
        "1",
        "--unfreeze",
        "0",
        "--lr",
        "1e-12",
        "--head-lr",
        "1e-12",
        "--no-augment",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--out",
        tmp_path / "ft",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    assert "no DATA given" in r.stderr and str(data) in r.stderr
    m = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert m["params"]["backbone"] == "tiny_cnn" and m["params"]["init_head"]
    assert m["n_val"] == json.loads((tmp_path / "head" / "metrics.json").read_text())["n_val"]  # the same split
    assert m["val_accuracy"] == pytest.approx(head_acc)  # a step of 1e-12 leaves the fitted head as it was
    assert m["init_head_val_accuracy"] == pytest.approx(head_acc)  # evaluated as "epoch 0" before any step

    # A rate that wrecks the network (losses in the hundreds, still finite: a NaN loss stops the run,
    # tests/test_nonfinite.py): with --select-on val the fitted head, as epoch 0, stays the model
    # that is kept (chosen on the val labels, so marked optimistic).
    r = cli(
        "finetune",
        "--init-head",
        tmp_path / "head",
        "--select-on",
        "val",
        "--epochs",
        "1",
        "--unfreeze",
        "all",
        "--optimizer",
        "sgd",
        "--lr",
        "0.001",
        "--head-lr",
        "0.001",
        "--warmup-epochs",
        "0",
        "--no-augment",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "--out",
        tmp_path / "wreck",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    wrecked = json.loads((tmp_path / "wreck" / "metrics.json").read_text())
    assert wrecked["selection"] == {"on": "val", "optimistic": True}
    assert wrecked["val_accuracy"] >= head_acc - 1e-9
    if wrecked["best_epoch"] == 0:
        assert wrecked["val_accuracy"] == pytest.approx(head_acc)
        assert wrecked["history"][0]["val_accuracy"] <= head_acc

    # a head of another feature space, and a head without a linear form: exit 2, one line
    other = cli(
        "finetune", "--init-head", tmp_path / "head", "--backbone", "efficientnet_lite0", "--out", tmp_path / "x1"
    )
    assert (
        other.exit_code == 2
        and "fitted on tiny_cnn features" in other.stderr
        and len(other.stderr.strip().splitlines()) == 1
    )
    assert cli("fit-head", "--clf", "knn", "--out", tmp_path / "knn", "--quiet").exit_code == 0
    knn = cli("finetune", "--init-head", tmp_path / "knn", "--out", tmp_path / "x2")
    assert knn.exit_code == 2 and "linear form" in knn.stderr, knn.stderr
    assert "fine-tuning" in knn.stderr and "export" not in knn.stderr and len(knn.stderr.strip().splitlines()) == 1
    metrics = tmp_path / "head" / "metrics.json"
    edited = json.loads(metrics.read_text())
    edited["feature_space"]["weights_sha256"] = "0" * 64
    metrics.write_text(json.dumps(edited))
    foreign = cli("finetune", "--init-head", tmp_path / "head", "--out", tmp_path / "x3")
    assert foreign.exit_code == 2 and "weights_sha256" in foreign.stderr, foreign.stderr


# --------------------------------------------------------------------------- the run folder


def test_run_folder_has_metrics_plots_model_and_checkpoints_that_load_with_weights_only(cli, data, tmp_path):
    r = cli("finetune", data, "--epochs", "2", "--unfreeze", "1", *TINY, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    out = r.json()
    assert {"run", "val_accuracy", "best_epoch", "epochs_done", "seconds"} <= set(out)
    run = tmp_path / "run"
    for name in (
        "metrics.json",
        "confusion.png",
        "learning_curve.png",
        "model.safetensors",
        "finetune.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in RUN_KEYS | {"best_epoch", "epochs_done", "seconds_per_epoch", "history"}:
        assert key in m, key
    assert m["kind"] == "finetune" and m["epochs_done"] == 2 and len(m["history"]) == 2
    assert m["n_train"] + m["n_val"] == 40 and m["n_val"] >= 2 and np.sum(m["confusion_matrix"]) == m["n_val"]
    assert len(m["split"]["val_sha256"]) == m["n_val"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["config"]["unfreeze"] == "1"
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] + 1 == m["best_epoch"] == out["best_epoch"]

    from tlx.finetune.model import load_finetuned
    from tlx.heads.runs import load_run

    assert load_run(run).kind == "finetune"
    module, pre = load_finetuned(run)
    assert pre.input_size == 32
    x = torch.randn(3, 3, 32, 32)
    p = module(x).detach()
    assert p.shape == (3, 2) and torch.allclose(p.sum(1), torch.ones(3))
    # the module is the best epoch's network
    from tlx.extractor.registry import get_backbone
    from tlx.finetune.model import FineTuneNet

    net = FineTuneNet(get_backbone("tiny_cnn").build().body, "avg", 32, 2)
    net.load_state_dict(best["model"])
    assert torch.allclose(torch.softmax(net.eval()(x), 1), p, atol=1e-6)


# --------------------------------------------------------------------------- exit codes


def test_bad_input_exits_2_with_one_line(cli, data, tmp_path):
    cases = [
        (["finetune", tmp_path / "nope", "--backbone", "tiny_cnn"], "does not exist"),
        (["finetune", data, "--backbone", "tiny_cnn", "--unfreeze", "9"], "only 3 stages"),
        (["finetune", data, "--backbone", "tiny_cnn", "--unfreeze", "top"], "'all'"),
        (["finetune", "--resume", "--out", tmp_path / "empty"], "no checkpoint"),
        (["finetune", "--resume"], "--resume needs --out"),
    ]
    (tmp_path / "empty").mkdir()
    for args, needle in cases:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    run = tmp_path / "run"
    assert cli("finetune", data, "--epochs", "1", *TINY, "--out", run).exit_code == 0
    again = cli("finetune", data, "--epochs", "1", *TINY, "--out", run)
    assert again.exit_code == 2 and "--resume" in again.stderr
    differ = cli("finetune", "--resume", "--out", run, "--epochs", "5", "--lr", "0.5")
    assert differ.exit_code == 2 and "epochs" in differ.stderr and "lr" in differ.stderr, differ.stderr
    # nothing left to do: --resume of a finished run rewrites the same report
    same = cli("finetune", "--resume", "--out", run, "--json", "--quiet")
    assert same.exit_code == 0, same.stderr
    assert same.json()["epochs_done"] == 1


# --------------------------------------------------------------------------- kill -9, then --resume

# Runs fine-tuning through the Python API and kills itself (SIGKILL, as kill -9 would) at
# the third step of the second epoch: mid-epoch, after the first epoch's checkpoint.
KILLED_RUN = """
import os, signal, sys
from tlx.finetune.train import finetune

def kill_mid_second_epoch(epoch, step):
    if (epoch, step) == (1, 2):
        os.kill(os.getpid(), signal.SIGKILL)

finetune(sys.argv[1], backbone="tiny_cnn", workers=0, batch_size=8, lr=0.01, head_lr=0.05, epochs=3, augment=False,
         out=sys.argv[2], on_step=kill_mid_second_epoch)
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finishes_the_same_epochs_as_an_uninterrupted_run(cli, data, tmp_path):
    args = ["finetune", str(data), "--epochs", "3", "--no-augment", *TINY]
    env = subprocess_env(tmp_path / "cache")
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, str(script), str(data), str(killed)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0

    done = subprocess.run(
        [sys.executable, "-m", "tlx", "finetune", "--out", str(killed), "--resume", "--json", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    assert resumed["epochs_done"] == 3 and resumed["resumed_from"] == 1

    ref = cli(*args, "--out", tmp_path / "straight")
    assert ref.exit_code == 0, ref.stderr
    assert resumed["val_accuracy"] == ref.json()["val_accuracy"]
    a = json.loads((killed / "metrics.json").read_text())["history"]
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())["history"]
    np.testing.assert_allclose([h["val_loss"] for h in a], [h["val_loss"] for h in b], rtol=1e-4)
    _assert_same_weights(killed, tmp_path / "straight")


def _assert_same_weights(run_a: Path, run_b: Path, atol: float = 1e-4) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(run_a / "model.safetensors")), load_file(str(run_b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k].float(), wb[k].float(), atol=atol, rtol=1e-4, msg=k)


# --------------------------------------------------------------------------- two processes (gloo)


@pytest.mark.slow
def test_two_processes_under_torchrun_agree_with_one(cli, data, tmp_path):
    args = ["finetune", str(data), "--epochs", "2", "--unfreeze", "2", "--no-augment", "--freeze-bn", *TINY]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = subprocess_env(tmp_path / "cache")
    two = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tlx", *args, "--out", str(tmp_path / "ddp")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    lines = [ln for ln in two.stdout.strip().splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    ddp = json.loads(lines[0])
    one = cli(*args, "--out", tmp_path / "single")
    assert one.exit_code == 0, one.stderr
    assert ddp["val_accuracy"] == one.json()["val_accuracy"] and ddp["epochs_done"] == 2
    a = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    b = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert (
        a["confusion_matrix"] == b["confusion_matrix"] and np.sum(a["confusion_matrix"]) == a["n_val"]
    )  # each image once
    np.testing.assert_allclose(
        [h["train_loss"] for h in a["history"]], [h["train_loss"] for h in b["history"]], rtol=1e-4
    )
    _assert_same_weights(tmp_path / "ddp", tmp_path / "single")
