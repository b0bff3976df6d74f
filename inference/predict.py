"""``tlx predict``: class probabilities for image files, from a run folder (head or fine-tuning)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..common.device import check_device
from ..common.progress import Reporter
from ..errors import TlxError
from ..extractor import distributed
from ..extractor.engines import check_engine
from .head import ComputeSettings, head_proba
from .images import expand_folders
from .rows import Predictions

CHUNK = 8192  # images per round: memory holds one round's rows, however many images there are


def predict_paths(run, paths: Sequence, **options: Any) -> Predictions:
    """:func:`predict_chunks` in one piece."""
    return Predictions.join(run.classes, list(predict_chunks(run, paths, **options)))


def predict_chunks(
    run,
    paths: Sequence,
    batch_size: int = 32,
    workers: int | None = None,
    device: str | None = "auto",
    reporter=None,
    reuse_cache: bool = True,
    tta: bool = False,
    engine: str = "auto",
) -> Iterator[Predictions]:
    """Predict image files and folders with a loaded run, in rounds of :data:`CHUNK` images in input order
    (``tta``: the mirror view averaged in). Under torchrun rank 0 gathers each round; the others yield empty ones."""
    check_device(device)
    check_engine(engine, device)
    paths = expand_folders(paths)
    if batch_size < 1:
        raise TlxError(f"--batch-size must be at least 1, not {batch_size}")
    if tta and run.kind == "finetune":
        raise TlxError(
            f"--tta averages cached-feature views and works with head runs; {run.path} is a fine-tuning run: drop --tta"
        )
    how = ComputeSettings(batch_size, workers, device, reporter or Reporter(), reuse_cache, engine=engine)
    ranks = distributed.setup(device)
    finished = False
    try:
        for start in range(0, len(paths), CHUNK):
            yield _predict_round(run, paths[start : start + CHUNK], ranks, how, tta)
        finished = True
    finally:
        distributed.teardown(ranks, finished)


def _predict_round(run, paths, ranks, how: ComputeSettings, tta: bool) -> Predictions:
    started = time.perf_counter()
    share = [paths[i] for i in distributed.shard(len(paths), ranks)]  # contiguous: rank order is input order
    # a fine-tuning changed the backbone: no cached vector applies, its images go through its network
    outcome = finetuned_proba(run, share, how) if run.kind == "finetune" else head_proba(run, share, how, tta)
    proba_of, failed, n_reused, n_computed = outcome
    for i in [i for i, p in proba_of.items() if not np.all(np.isfinite(p))]:  # argmax of NaN: a class by accident
        del proba_of[i]
        failed[i] = (
            f"the run {run.path} gave NaN/inf probabilities for this image (its weights or features are not "
            "finite numbers): no label; fit or fine-tune the run again"
        )
    ok = sorted(proba_of)
    mine = Predictions(
        classes=list(run.classes),
        paths=[str(share[i]) for i in ok],
        proba=np.stack([proba_of[i] for i in ok]) if ok else np.zeros((0, len(run.classes))),
        failed=[{"path": str(share[i]), "reason": failed[i]} for i in sorted(failed)],
        n_reused=n_reused,
        n_computed=n_computed,
        engine=dict(how.used),
    )
    joined = Predictions.join(run.classes, distributed.gather(ranks, mine, "collecting the predictions"))
    joined.seconds = round(time.perf_counter() - started, 3)
    return joined


def finetuned_proba(run, paths, how: ComputeSettings):
    """A fine-tuning run's ``(proba_of, failed, n_reused=0, n_computed)``, as :func:`.head.head_proba` gives."""
    import torch

    from ..extractor.engine import default_workers, resolve_device
    from ..extractor.preprocess import Normalize
    from ..finetune.data import eval_loader
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
    loader = eval_loader([str(p) for p in paths], pre, how.batch_size, workers, pin_memory=dev.type == "cuda")
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
