"""Stage-one speed: does `tlx extract` keep the backbone busy?

Measures, in one run and on the same images:
  (a) the backbone's forward rate on already-decoded, already-resized uint8 tensors
      (the best `tlx extract` could do: nothing but the forward pass and normalization);
  (b) `tlx extract` end to end into a fresh cache: discovery, hashing, decoding in DataLoader
      workers, the forward pass, journal shards and the final HDF5 file;
and prints b/a. The two are interleaved (a, b, a, b, ...) and the medians compared, because
these machines are shared and noisy. Target on a 2-core CPU with the default backbone on the
ants/bees set: b/a >= 0.90.

    python benchmarks/extract.py [--data DIR] [--backbone NAME] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, machine, require_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    data = require_data(args.data)

    import torch

    from tlx.extractor.discovery import discover
    from tlx.extractor.engine import FeatureRunner
    from tlx.extractor.extract import extract
    from tlx.extractor.preprocess import ResizeCrop
    from tlx.extractor.registry import get_backbone

    index = discover(data)
    paths = [str(index.abspath(it)) for it in index.items]
    net = get_backbone(args.backbone).build()
    runner = FeatureRunner(net, "avg", device="cpu")
    resize_crop = ResizeCrop(net.cfg.preprocessing)
    decoded = torch.stack([resize_crop.load(p) for p in paths])  # untimed: (a) starts from these
    runner.forward_uint8(decoded[: args.batch_size])  # warm-up

    def forward_rate() -> float:
        start = time.perf_counter()
        for i in range(0, len(decoded), args.batch_size):
            runner.forward_uint8(decoded[i : i + args.batch_size])
        return len(decoded) / (time.perf_counter() - start)

    def extract_rate() -> float:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            result = extract(
                data,
                backbone=args.backbone,
                batch_size=args.batch_size,
                workers=args.workers,
                device="cpu",
                cache_dir=cache,
            )
            seconds = time.perf_counter() - start
            assert result.n_new == len(paths), result
        return len(paths) / seconds

    a_rates, b_rates = [], []
    for _ in range(args.repeats):
        a_rates.append(forward_rate())
        b_rates.append(extract_rate())
    a, b = statistics.median(a_rates), statistics.median(b_rates)
    print(f"machine: {machine()}")
    print(f"data: {data} ({len(paths)} images), backbone {args.backbone}, batch {args.batch_size}")
    print(f"(a) forward on decoded tensors: {a:.1f} img/s   runs: {', '.join(f'{r:.1f}' for r in a_rates)}")
    print(f"(b) tlx extract end to end:     {b:.1f} img/s   runs: {', '.join(f'{r:.1f}' for r in b_rates)}")
    print(f"b/a = {b / a:.3f}   (target >= 0.90)")
    print(
        json.dumps(
            {
                "a_img_s": round(a, 2),
                "b_img_s": round(b, 2),
                "ratio": round(b / a, 4),
                "n_images": len(paths),
                "backbone": args.backbone,
            }
        )
    )


if __name__ == "__main__":
    main()
