"""A fine-tuning run's probabilities: its images always go through the fine-tuned network (the
backbone changed, so no cached vector applies)."""

from __future__ import annotations

import numpy as np

from .features import ComputeSettings


def finetuned_proba(run, paths, how: ComputeSettings):
    """``({input index: probabilities}, {input index: reason}, n_computed)`` of ``paths``."""
    import torch
    from torch.utils.data import DataLoader

    from ..extractor.engine import ImageFiles, collate_skipping_failures, default_workers, resolve_device
    from ..extractor.preprocess import Normalize, ResizeCrop
    from ..finetune.model import load_finetuned

    if "_finetuned" not in vars(run):  # built once per loaded run, across rounds
        vars(run)["_finetuned"] = load_finetuned(run.path)
    module, pre = vars(run)["_finetuned"]
    dev = resolve_device(how.device)
    module = module.eval().to(dev)
    normalize = Normalize(pre).to(dev)
    failed: dict[int, str] = {}
    proba_of: dict[int, np.ndarray] = {}
    workers = default_workers() if how.workers is None else how.workers
    loader = DataLoader(
        ImageFiles([str(p) for p in paths], ResizeCrop(pre)),
        batch_size=how.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        prefetch_factor=4 if workers else None,
    )
    how.reporter.start(len(paths), f"predicting with the fine-tuned {run.space.backbone}")
    try:
        with torch.inference_mode():
            for indices, images, failures in loader:
                failed.update(failures)
                if indices:
                    p = module(normalize(images.to(dev))).double().cpu().numpy()
                    proba_of.update(zip(indices, p, strict=False))
                how.reporter.advance(len(indices) + len(failures))
    finally:
        how.reporter.stop()
    return proba_of, failed, len(paths) - len(failed)
