"""A fine-tuning run's probabilities, from its fine-tuned network."""

from __future__ import annotations

import numpy as np

from .features import ComputeSettings


def finetuned_proba(run, paths, how: ComputeSettings):
    """``(proba_of, failed, n_reused=0, n_computed)`` of ``paths``, as :func:`..head.head_proba` gives."""
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
    return proba_of, failed, 0, len(paths) - len(failed)
