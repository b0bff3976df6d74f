"""A head run's probabilities: the images' features (the cache's vector for content it holds, else computed
with the run's backbone, rebuilt once per process; mirrored too under ``--tta``) through the head."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cache.space import FeatureSpace
from ..errors import RunError, TlxError
from ..extractor.extract import backbone_for_space
from ..heads.runs import weights_path_for
from .cached import cached_features
from .images import hash_images

_BACKBONES: dict[tuple, object] = {}  # (feature space key, weights path) -> network, across rounds


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


def head_proba(run, paths, how: ComputeSettings, tta: bool = False):
    """``(proba_of, failed, n_reused, n_computed)``; the mirror view is never in a cache."""
    hashes, failed = hash_images(paths)
    feats, n_reused, n_computed = head_features(run, paths, hashes, failed, how)
    flipped = head_features(run, paths, hashes, failed, replace(how, reuse_cache=False, flip=True))[0] if tta else {}
    ok = sorted(i for i in feats if i not in failed and (not tta or i in flipped))
    if not ok:
        return {}, failed, n_reused, n_computed
    proba = full_proba(run, np.stack([feats[i] for i in ok]).astype(np.float32, copy=False))
    if tta:
        proba = (proba + full_proba(run, np.stack([flipped[i] for i in ok]).astype(np.float32))) / 2
    return dict(zip(ok, proba, strict=True)), failed, n_reused, n_computed


def full_proba(run, X: np.ndarray) -> np.ndarray:
    """The head's probabilities, one column per class of the run (0 for a class it never saw)."""
    out = np.zeros((len(X), len(run.classes)), dtype=np.float64)
    out[:, head_class_indices(run)] = np.asarray(run.head.predict_proba(X), dtype=np.float64)
    return out


def head_class_indices(run) -> list[int]:
    """Positions in ``run.classes`` of the head's ``classes_`` (the columns of predict_proba)."""
    cols = []
    for c in np.asarray(run.head.classes_).tolist():
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(run.classes):
            cols.append(int(c))
        elif str(c) in run.classes:
            cols.append(run.classes.index(str(c)))
        else:
            raise TlxError(
                f"the head in {run.path} knows class {c!r}, which is not among the run's classes {run.classes}: "
                "the run is damaged; fit it again"
            )
    return cols


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
    what = "mirrored images" if how.flip else "features"
    reporter.start(len(todo_paths), f"computing {what} with {run.space.backbone}")
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


def backbone_for(run):
    """The backbone of one feature space, built once per process (``tlx predict`` runs in rounds)."""
    key = (run.space.key, str(weights_path_for(run)))
    if key not in _BACKBONES:
        if len(_BACKBONES) >= 4:  # a long-lived process predicting with many runs
            _BACKBONES.pop(next(iter(_BACKBONES)))
        _BACKBONES[key] = rebuild_backbone(run)
    return _BACKBONES[key]


def rebuild_backbone(run):
    """The run's backbone. The run fixes the weights, so no error may suggest a --weights option:
    predict and export have none."""
    weights = weights_path_for(run)
    if weights and not Path(weights).is_file():
        raise RunError(
            f"the features of {run.path} were made with the weights file {weights}, which no longer exists: "
            "put that file back to compute features of images that are not in the run's cache"
        )
    try:
        return backbone_for_space(run.space, weights)
    except TlxError as exc:
        # The extractor's messages are written for `tlx extract`, which takes --weights.
        message = re.sub(r"[,;]? (or )?pass --weights FILE", "", str(exc))
        message = re.sub(
            r" \(the features were made with --weights;[^)]*\)",
            f" (the features were made with {run.space.weights_id}: put that file back where the run records it)",
            message,
        )
        raise type(exc)(message) from None
