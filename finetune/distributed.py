"""The collectives fine-tuning needs, on the torchrun set-up of stage one
(:mod:`tlx.extractor.distributed`): outside torchrun a world of one, where each is a no-op."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..extractor.distributed import Ranks as Dist
from ..extractor.distributed import barrier, broadcast, setup
from ..extractor.distributed import teardown as cleanup

__all__ = ["Dist", "all_gather_objects", "all_reduce_sum", "barrier", "broadcast_object", "cleanup", "setup"]


def all_reduce_sum(d: Dist, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place."""
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(d: Dist, obj) -> list:
    if not d.enabled:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(d: Dist, obj):
    return broadcast(d, obj, "sharing the run folder")
