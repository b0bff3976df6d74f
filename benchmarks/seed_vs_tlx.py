"""Benchmark, the headline: trying K = 10 head settings on the ants/bees photos

(a) the seed's way: the PyTorch tutorial's fixed-feature-extractor recipe, which re-runs the frozen
    base over every image every epoch (new nn.Linear head, SGD lr 0.001 momentum 0.9, StepLR(7, 0.1),
    RandomResizedCrop + flip augmentation, 25 epochs per setting). ONE real epoch (train + val) is
    timed and extrapolated x 25 epochs x 10 settings;
(b) tlx as a user runs it: one `tlx extract` process into a fresh cache, then ten separate
    `tlx fit-head` processes (the ten settings below), start-up included,

both on this machine, with the same frozen backbone (tlx's default
efficientnet_lite0, built through the backbone registry) so accuracies compare like for like.

    python benchmarks/seed_vs_tlx.py [--data ../shared/data/hymenoptera] [--epochs 1]

(a) runs in this process with its imports done before the timer; (b) is timed from the shell's
point of view, so each command's Python start-up and imports count.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hymenoptera"
EPOCHS_PER_SETTING, SETTINGS = 25, 10

# The ten settings a user tries from the shell (issue 8), each one `tlx fit-head` process.
TLX_SETTINGS = [
    ["--clf", "linear"],
    ["--clf", "linear", "--sweep"],
    ["--clf", "linear", "--class-weight", "balanced"],
    ["--clf", "logreg"],
    ["--clf", "logreg", "--sweep"],
    ["--clf", "svm"],
    ["--clf", "knn"],
    ["--clf", "ridge"],
    ["--clf", "rf"],
    ["--clf", "mlp"],
]


def seed_recipe(data: Path, epochs: int, workers: int, batch_size: int = 4) -> dict:
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from tlx.extractor.pooling import FeatureExtractor
    from tlx.extractor.registry import DEFAULT_BACKBONE, get_backbone

    torch.manual_seed(0)
    backbone = get_backbone(DEFAULT_BACKBONE).build()
    pre = backbone.cfg.preprocessing
    interp = getattr(transforms.InterpolationMode, pre.interpolation.upper())
    tfms = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(pre.input_size, interpolation=interp),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(pre.mean, pre.std),
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(pre.resize_size, interpolation=interp),
                transforms.CenterCrop(pre.input_size),
                transforms.ToTensor(),
                transforms.Normalize(pre.mean, pre.std),
            ]
        ),
    }
    sets = {p: datasets.ImageFolder(data / p, tfms[p]) for p in ("train", "val")}
    loaders = {
        p: torch.utils.data.DataLoader(sets[p], batch_size=batch_size, shuffle=(p == "train"), num_workers=workers)
        for p in sets
    }
    # the tutorial: freeze the base, replace the classifier with a new Linear layer
    base = FeatureExtractor(backbone.body, "avg")
    for p in base.parameters():
        p.requires_grad = False
    model = nn.Sequential(base, nn.Linear(backbone.cfg.feature_dim, len(sets["train"].classes)))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    best_acc, epoch_seconds = 0.0, []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for phase in ("train", "val"):
            model.train(phase == "train")  # as the tutorial: the frozen base's batch-norm layers are in train mode too
            correct = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            else:
                acc = correct / len(sets["val"])
                if acc > best_acc:
                    # the recipe's copy of the best weights, kept (unused) so that its cost is timed too
                    best_acc, _best_wts = acc, copy.deepcopy(model.state_dict())
        epoch_seconds.append(time.perf_counter() - t0)
        print(f"  (a) epoch {epoch + 1}/{epochs}: {epoch_seconds[-1]:.1f} s, val accuracy {acc:.4f}", flush=True)
    return {"epoch_seconds": min(epoch_seconds), "val_accuracy": best_acc, "epochs": epochs}


def tlx_way(data: Path, workers: int) -> dict:
    """One `tlx extract` and ten `tlx fit-head` processes, as from the shell: every wall time
    includes Python's start-up and tlx's imports."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TLX_CACHE_DIR": str(Path(tmp) / "cache"), "TLX_RUNS_DIR": str(Path(tmp) / "runs")}
        tlx = [sys.executable, "-m", "tlx"]
        t0 = time.perf_counter()
        subprocess.run([*tlx, "extract", str(data), "--workers", str(workers), "--quiet"], env=env, check=True)
        t_extract = time.perf_counter() - t0
        print(f"  (b) tlx extract {data}: {t_extract:.1f} s (fresh cache, one process)", flush=True)
        fits = []
        for i, setting in enumerate(TLX_SETTINGS):
            t1 = time.perf_counter()
            out = Path(tmp) / "runs" / f"{i:02d}"
            subprocess.run(
                [*tlx, "fit-head", *setting, "--out", str(out), "--quiet"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - t1
            accuracy = json.loads((out / "metrics.json").read_text())["val_accuracy"]
            fits.append((" ".join(setting), accuracy, wall))
            print(f"  (b) tlx fit-head {' '.join(setting):<40} val accuracy {accuracy:.4f}  {wall:.2f} s", flush=True)
        total = time.perf_counter() - t0
    return {"extract_seconds": t_extract, "total_seconds": total, "fits": fits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="real epochs of the seed recipe to run (the time of the fastest is extrapolated)",
    )
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    import torch

    print(
        f"data: {args.data}; machine: {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only"
    )
    print("(b) tlx: one extract + ten fits")
    b = tlx_way(args.data, args.workers)
    print(f"(a) seed recipe: {args.epochs} real epoch(s) of the fixed-feature-extractor loop")
    a = seed_recipe(args.data, args.epochs, args.workers)

    seed_total = a["epoch_seconds"] * EPOCHS_PER_SETTING * SETTINGS
    best = max(b["fits"], key=lambda f: f[1])
    linear_default = b["fits"][0][1]
    print()
    print(
        f"(a) seed recipe: one epoch (train+val) = {a['epoch_seconds']:.1f} s; "
        f"EXTRAPOLATED x {EPOCHS_PER_SETTING} epochs x {SETTINGS} settings "
        f"= {seed_total:.0f} s ({seed_total / 3600:.2f} h); "
        f"val accuracy after the {a['epochs']} epoch(s) actually run: {a['val_accuracy']:.4f}"
    )
    print(
        f"(b) tlx: extract {b['extract_seconds']:.1f} s + "
        f"ten fit-head processes {b['total_seconds'] - b['extract_seconds']:.1f} s "
        f"= {b['total_seconds']:.1f} s measured; "
        f"best val accuracy {best[1]:.4f} (fit-head {best[0]})"
    )
    print(
        f"speed-up (a) / (b) = {seed_total / b['total_seconds']:.0f}x  "
        "(target >= 100x at equal or better best accuracy)"
    )
    print(
        f"linear head (default settings) on {os.path.basename(str(args.data))} / efficientnet_lite0 features: "
        f"val accuracy {linear_default:.4f} (target >= 0.94)"
    )


if __name__ == "__main__":
    main()
