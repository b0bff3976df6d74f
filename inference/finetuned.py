"""A fine-tuning run's probabilities: its images always go through the fine-tuned network
(the backbone changed, so no cached vector applies), built once per loaded run."""

from __future__ import annotations

import numpy as np


def memo(run, name: str, build):
    """Build something once per loaded run (the fine-tuned module) across rounds."""
    cache = run.__dict__.setdefault("_built", {})
    if name not in cache:
        cache[name] = build()
    return cache[name]


def finetuned_proba(run, paths, batch_size, workers, device, reporter):
    import torch
    from torch.utils.data import DataLoader

    from ..extractor.engine import ImageFiles, collate_skipping_failures, default_workers, resolve_device
    from ..extractor.preprocess import Normalize, ResizeCrop
    from ..finetune.model import load_finetuned

    module, pre = memo(run, "finetuned", lambda: load_finetuned(run.path))
    dev = resolve_device(device)
    module = module.eval().to(dev)
    normalize = Normalize(pre).to(dev)
    failed: dict[int, str] = {}
    proba_of: dict[int, np.ndarray] = {}
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        ImageFiles([str(p) for p in paths], ResizeCrop(pre)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        prefetch_factor=4 if workers else None,
    )
    reporter.start(len(paths), f"predicting with the fine-tuned {run.space.backbone}")
    try:
        with torch.inference_mode():
            for indices, images, failures in loader:
                for j, reason in failures:
                    failed[j] = reason
                if indices:
                    p = module(normalize(images.to(dev))).double().cpu().numpy()
                    proba_of.update(zip(indices, p, strict=False))
                reporter.advance(len(indices) + len(failures))
    finally:
        reporter.stop()
    return proba_of, failed, len(paths) - len(failed)
