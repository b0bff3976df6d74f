"""Stage-one memory: peak RSS of `tlx extract` must not grow with the dataset.

Builds two datasets from the same photos — N images and 4N images (copies made distinct by
a few appended bytes, so every copy has its own content hash and really is extracted) — runs
`tlx extract` on each in a fresh subprocess, and prints the peak RSS of the main process and
of its DataLoader workers. Target: 4x the images raises peak RSS by under 10%.

    python benchmarks/extract_memory.py [--data DIR] [--backbone NAME] [--factor 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HYMENOPTERA, require_data

CHILD = r"""
import json, resource, sys, time
from tlx.extractor.extract import extract
start = time.perf_counter()
r = extract(sys.argv[1], backbone=sys.argv[2], cache_dir=sys.argv[3], device="cpu")
self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"n_images": r.n_images, "seconds": time.perf_counter() - start,
                  "peak_rss_mib": self_kib / 1024, "peak_worker_rss_mib": children_kib / 1024}))
"""


def make_dataset(src: Path, dst: Path, copies: int) -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        rel = path.relative_to(src)
        for k in range(copies):
            out = dst / rel.parent / f"{rel.stem}__{k}{rel.suffix}"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
            if k:
                with open(out, "ab") as f:  # bytes after the end-of-image marker: same picture, new hash
                    f.write(b"tlx-copy-%d" % k)


def measure(data: Path, backbone: str, cache: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data), backbone, str(cache)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HYMENOPTERA)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--factor", type=int, default=4)
    args = ap.parse_args()
    src = require_data(args.data)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        make_dataset(src, tmp / "x1" / src.name, 1)
        make_dataset(src, tmp / f"x{args.factor}" / src.name, args.factor)
        small = measure(tmp / "x1" / src.name, args.backbone, tmp / "cache1")
        large = measure(tmp / f"x{args.factor}" / src.name, args.backbone, tmp / "cache4")
    for name, r in (("1x", small), (f"{args.factor}x", large)):
        print(
            f"{name}: {r['n_images']:5d} images  {r['seconds']:6.1f} s  "
            f"peak RSS main {r['peak_rss_mib']:7.1f} MiB, workers {r['peak_worker_rss_mib']:7.1f} MiB"
        )
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    worker_growth = large["peak_worker_rss_mib"] / small["peak_worker_rss_mib"] - 1
    print(
        f"peak RSS growth for {args.factor}x the images: main {100 * growth:+.1f}%, "
        f"workers {100 * worker_growth:+.1f}%   (target < +10%)"
    )
    print(
        json.dumps(
            {"small": small, "large": large, "growth": round(growth, 4), "worker_growth": round(worker_growth, 4)}
        )
    )


if __name__ == "__main__":
    main()
