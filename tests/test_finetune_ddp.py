"""Steps whose images are all unreadable, under DistributedDataParallel (two gloo processes):
a process with nothing to train on still takes part in the step, a step with nothing anywhere
is skipped by every process, and the result is that of the same run without those files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import broken_files, make_folder_dataset, subprocess_env

# Trains one epoch of tiny_cnn over the batches in a JSON file (one list of batches per
# process) with train_one_epoch, and saves what it learned. Run by torchrun, or alone.
STEPS = """
import json, sys

import numpy as np
import torch
from torch.utils.data import DataLoader

from tlx.extractor.engine import ImageFiles, collate_skipping_failures
from tlx.extractor.preprocess import Normalize, ResizeCrop
from tlx.extractor.registry import get_backbone
from tlx.finetune.config import FinetuneConfig
from tlx.finetune.distributed import cleanup, setup
from tlx.finetune.epoch import Precision, Training, reduce_train, train_one_epoch
from tlx.finetune.model import apply_freezing, build_net
from tlx.finetune.optim import make_optimizer

batches_file, out = sys.argv[1], sys.argv[2]
procs = setup("cpu")
batches = json.loads(open(batches_file).read())[procs.rank]
paths = [p for batch in batches for p in batch]
labels = np.array([0 if "/ants/" in p else 1 for p in paths])
starts = np.cumsum([0] + [len(b) for b in batches])
index_batches = [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]

torch.manual_seed(0)
backbone = get_backbone("tiny_cnn").build()
pre = backbone.cfg.preprocessing
net = build_net(backbone, "avg", 2)
trainable = apply_freezing(net, backbone.stages, 2)
model = torch.nn.parallel.DistributedDataParallel(net) if procs.enabled else net
cfg = FinetuneConfig(data="", backbone="tiny_cnn", lr=0.01, head_lr=0.05, weight_decay=0.1)  # AdamW
optimizer = make_optimizer(net, cfg)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
training = Training(net, model, optimizer, scheduler, None, Normalize(pre), Precision(torch.device("cpu")), trainable,
                    False, pre.input_size, procs)
loader = DataLoader(
    ImageFiles(paths, ResizeCrop(pre)), batch_sampler=index_batches, collate_fn=collate_skipping_failures
)
local = train_one_epoch(training, loader, labels, epoch=0)
mean_loss, n = reduce_train(procs, local, torch.device("cpu"))
if procs.is_main:
    torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler_steps": scheduler.last_epoch,
                "mean_loss": mean_loss, "n": n}, out)
cleanup(procs)
"""


def _run(script: Path, batches: list, out: Path, processes: int, env: dict) -> dict:
    spec = out.with_suffix(".json")
    spec.write_text(json.dumps(batches))
    if processes == 1:
        command = [sys.executable, str(script)]
    else:
        command = [
            str(Path(sys.executable).with_name("torchrun")),
            "--standalone",
            "--nproc_per_node",
            str(processes),
            str(script),
        ]
    # Its own session, so that a hang (processes whose all-reduces fell out of step) can be
    # ended together with torchrun's workers.
    proc = subprocess.Popen(
        [*command, str(spec), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=600)  # only a hang takes this long, even on a loaded machine
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{processes} process(es) still training after 600 s: the processes hang")
    assert proc.returncode == 0, stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_a_process_whose_batch_is_all_broken_files_keeps_ddp_in_step(tmp_path):
    data = make_folder_dataset(tmp_path / "data", per_class=4)
    broken = tmp_path / "broken"
    broken_files(broken)
    ants = [str(data / "ants" / f"ants_{i}.png") for i in range(4)]
    bees = [str(data / "bees" / f"bees_{i}.png") for i in range(4)]
    bad = [str(broken / name) for name in ("empty.jpg", "truncated.jpg", "text.jpg", "bomb.png")]
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    env = subprocess_env()
    # Step 1: both processes have images. Step 2: the second one's are all broken.
    # Step 3: every image of the step is broken, on both processes.
    two = [[ants[:2], ants[2:], bad[:2]], [bees[:2], bad[2:], bad[:2]]]
    ddp = _run(script, two, tmp_path / "ddp.pt", 2, env)
    # The same run without those files: one process, the same images in each step.
    one = _run(script, [[ants[:2] + bees[:2], ants[2:]]], tmp_path / "one.pt", 1, env)

    assert ddp["n"] == one["n"] == 6
    assert ddp["scheduler_steps"] == one["scheduler_steps"] == 2  # the empty step was skipped everywhere
    assert ddp["mean_loss"] == pytest.approx(one["mean_loss"], rel=1e-5)
    for name, tensor in one["net"].items():
        torch.testing.assert_close(ddp["net"][name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    # AdamW took two steps, not three: no weight decay or moment update on the skipped step
    steps = {float(s["step"]) for s in ddp["optimizer"]["state"].values()}
    assert steps == {2.0}
    for key, state in one["optimizer"]["state"].items():
        torch.testing.assert_close(ddp["optimizer"]["state"][key]["exp_avg"], state["exp_avg"], atol=1e-6, rtol=1e-5)
