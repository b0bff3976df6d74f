"""Fine-tuning on the real ants/bees photos: validation accuracy and seconds per epoch for

  (a) --unfreeze 0              (the head alone, from a random init, on augmented images)
  (b) --unfreeze 1              (the last stage + a random head)
  (c) --unfreeze 1 --init-head  (the last stage + the head `tlx fit-head --clf linear` fitted: LP-FT)

next to the cached linear head itself. Prints one table and one JSON line.

    python benchmarks/finetune.py [--data ../shared/data/hymenoptera] [--epochs 3] [--out bench-out/finetune]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hymenoptera")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "finetune")
    args = ap.parse_args()

    import torch

    from tlx.extractor.extract import extract
    from tlx.finetune.train import finetune
    from tlx.heads.training.fit import fit_head

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    cache = args.out / "cache"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
        f"{args.backbone} on {args.data}; {args.epochs} epochs each",
        flush=True,
    )

    t = time.perf_counter()
    ex = extract(args.data, backbone=args.backbone, cache_dir=cache, workers=args.workers, device=args.device)
    print(f"extract: {ex.n_images} images in {time.perf_counter() - t:.1f} s", flush=True)
    head = fit_head(features=ex.path, clf="linear", out=args.out / "head")
    head_acc = float(head.val_accuracy)
    print(f"fit-head --clf linear: val accuracy {head_acc:.4f} ({head.fit_seconds:.2f} s)", flush=True)

    common = dict(
        backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers, device=args.device
    )
    rows: list[dict[str, Any]] = [
        {
            "config": "cached linear head (fit-head)",
            "val_accuracy": head_acc,
            "best_epoch": None,
            "seconds_per_epoch": None,
        }
    ]
    for name, extra in (
        ("(a) --unfreeze 0", dict(unfreeze=0)),
        ("(b) --unfreeze 1, random head", dict(unfreeze=1)),
        ("(c) --unfreeze 1 --init-head", dict(unfreeze=1, init_head=args.out / "head")),
    ):
        kwargs = {**common, **extra}
        if "init_head" in kwargs:
            kwargs.pop("backbone")
        t = time.perf_counter()
        r = finetune(args.data, out=args.out / name.split()[0].strip("()"), **kwargs)
        rows.append(
            {
                "config": name,
                "val_accuracy": r.val_accuracy,
                "best_epoch": r.best_epoch,
                "seconds_per_epoch": r.seconds_per_epoch,
                "history": [round(h["val_accuracy"], 4) for h in r.metrics["history"]],
            }
        )
        print(
            f"{name}: val accuracy {r.val_accuracy:.4f} (best epoch {r.best_epoch}/{r.epochs_done}), "
            f"{r.seconds_per_epoch:.1f} s/epoch, "
            f"per epoch {rows[-1]['history']}, total {time.perf_counter() - t:.0f} s",
            flush=True,
        )

    print()
    print(f"{'config':<34} {'val acc':>8} {'best ep':>8} {'s/epoch':>8}")
    for row in rows:
        be = "" if row["best_epoch"] is None else str(row["best_epoch"])
        spe = "" if row["seconds_per_epoch"] is None else f"{row['seconds_per_epoch']:.1f}"
        print(f"{row['config']:<34} {row['val_accuracy']:>8.4f} {be:>8} {spe:>8}")
    c = rows[-1]["val_accuracy"]
    print(f"target (c) >= cached linear head: {c:.4f} vs {head_acc:.4f} -> {'met' if c >= head_acc else 'NOT met'}")
    print(json.dumps({"epochs": args.epochs, "rows": rows}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
