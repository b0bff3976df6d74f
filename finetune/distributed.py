"""torchrun detection (nanoGPT style) and the collectives fine-tuning needs; outside torchrun
this is a world of one and every collective is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    enabled: bool = False  # a process group was initialised

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> Dist:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when RANK is set."""
    if "RANK" not in os.environ:
        return Dist()
    rank, local_rank, world = (
        int(os.environ["RANK"]),
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ["WORLD_SIZE"]),
    )
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, local_rank, world, True)


def cleanup(d: Dist, finished: bool = True) -> None:
    """Tear the process group down. After a normal finish the processes first meet at a barrier:
    gloo can abort ("terminate called without an active exception") when one process destroys
    the group while another still uses it. After an error they do not wait, which could hang."""
    if d.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


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
    box = [obj]
    if d.enabled:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
