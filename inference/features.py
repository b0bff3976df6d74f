"""Feature vectors of the images to predict: from the run's cache when it holds the content, else computed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..cache.space import FeatureSpace
from .backbone import backbone_for
from .cached import cached_features


@dataclass
class ComputeSettings:
    """How features are computed."""

    batch_size: int
    workers: int | None
    device: str | None
    reporter: Any  # a tlx.common.progress.Reporter
    reuse_cache: bool
    flip: bool = False  # the mirror half of --tta
    engine: str = "auto"  # --engine for the frozen forward pass
    used: dict = field(default_factory=dict)  # the engine that ran and its equality check


def head_features(run, paths, hashes, failed, how: ComputeSettings):
    """``({input index: vector}, n_reused, n_computed)`` in the run's feature space."""
    fused = run.info.get("fused")
    if not fused:
        feats, n_reused, n_computed, _ = block_features(run, paths, hashes, failed, how)
        return feats, n_reused, n_computed
    # a fused run: each block from its own cache or backbone, side by side, standardized
    from ..heads.training.fusion import load_standardization

    parts = []
    for b in fused["blocks"]:
        info = {"cache": b["cache"], "weights_path": b.get("weights_path", "")}
        block = replace(run, info=info, space=FeatureSpace.from_dict(b["feature_space"]))
        parts.append(block_features(block, paths, hashes, failed, how))
    mean, scale = load_standardization(run.path)
    ok_all = [i for i in parts[0][0] if all(i in p[0] for p in parts) and i not in failed]
    feats = {i: (np.concatenate([p[0][i] for p in parts]) - mean) / scale for i in ok_all}
    n_reused = sum(1 for i in ok_all if all(i in p[3] for p in parts))
    return feats, n_reused, len(ok_all) - n_reused


def block_features(run, paths, hashes, failed, how: ComputeSettings):
    """``({input index: vector}, n_reused, n_computed, reused indices)`` of one feature space."""
    cached, note = cached_features(run, hashes) if how.reuse_cache else ({}, "")
    if note:
        how.reporter.message(f"note: {note}")
    feats: dict[int, np.ndarray] = dict(cached)
    first_of: dict[str, int] = {}  # each distinct new content is computed once
    for i, h in enumerate(hashes):
        if h is not None and i not in cached:
            first_of.setdefault(h, i)
    todo = sorted(first_of.values())
    if todo:
        _compute(run, paths, todo, how, feats, failed)
        for i, h in enumerate(hashes):  # duplicates of a computed (or failed) content
            if h is not None and i not in feats and i not in failed:
                src = first_of[h]
                if src in feats:
                    feats[i] = feats[src]
                else:
                    failed[i] = failed[src]
    return feats, len(cached), sum(1 for i in todo if i in feats), set(cached)


def _compute(run, paths, todo: list[int], how: ComputeSettings, feats: dict, failed: dict) -> None:
    """Run ``paths[todo]`` through the run's backbone into ``feats`` (unreadable ones into ``failed``)."""
    from ..extractor.engine import FeatureRunner, ImageFiles
    from ..extractor.preprocess import ResizeCrop

    todo_paths = [str(paths[i]) for i in todo]
    reporter = how.reporter
    runner = FeatureRunner(
        backbone_for(run),
        run.space.pooling,
        device=how.device,
        precision=run.space.precision,  # an fp16 feature space is computed in fp16 here too
        stages=run.space.stages,
        engine=how.engine,
        note=reporter.message,
    )
    files = ImageFiles(todo_paths, ResizeCrop(run.space.preprocessing, flip=True)) if how.flip else None
    reporter.start(
        len(todo_paths), f"computing {'mirrored images' if how.flip else 'features'} with {run.space.backbone}"
    )
    try:
        for batch in runner.run(todo_paths, how.batch_size, how.workers, on_batch=reporter.advance, files=files):
            for j, reason in batch.failures:
                failed[todo[j]] = reason
            # as the cache stores them: a float16 cache holds float32 vectors rounded to half
            stored = batch.features.astype(run.space.store_dtype).astype(np.float32)
            for j, vec in zip(batch.indices, stored, strict=True):
                feats[todo[j]] = vec
    finally:
        reporter.stop()
    if runner.forward.report is not None:
        how.used.update(asdict(runner.forward.report))
