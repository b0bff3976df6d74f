"""The frozen backbone of a run's feature space, rebuilt for images not in its cache."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import RunError, TlxError
from ..extractor.extract import backbone_for_space
from ..heads.runs import weights_path_for

_BACKBONES: dict[tuple, object] = {}  # (feature space key, weights path) -> network, across rounds


def backbone_for(run):
    """The backbone of one feature space, built once per process: ``tlx predict`` computes new
    images in rounds and must not rebuild it each time."""
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
