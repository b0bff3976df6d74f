"""Under ``torchrun`` (extract, predict, finetune): which rank this process is, and the few
collectives they need. Without torchrun's RANK / WORLD_SIZE, or with a world of one, every
collective is a no-op. The timeout (``TLX_DIST_TIMEOUT`` seconds) makes the others stop with a
clear error when a rank dies."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ..errors import TlxError

DEFAULT_TIMEOUT_S = 1800.0


class RankLost(TlxError):
    """Another rank died or stopped answering; the work already flushed is kept."""

    exit_code = 1


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    enabled: bool = False
    owned: bool = False  # this module started the process group (and ends it)
    timeout_s: float = DEFAULT_TIMEOUT_S
    local_rank: int = 0  # the GPU of this process on its machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun announces it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def timeout_seconds() -> float:
    raw = os.environ.get("TLX_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise TlxError(f"TLX_DIST_TIMEOUT must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise TlxError(f"TLX_DIST_TIMEOUT must be positive, not {raw!r}")
    return value


def setup(device: str | None) -> Ranks:
    """Join the torchrun group when there is one of more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if "RANK" not in os.environ or world <= 1:
        return Ranks()
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    rank, local, timeout = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0") or 0), timeout_seconds()
    if dist.is_initialized():
        return Ranks(rank, dist.get_world_size(), True, False, timeout, local)
    cuda = device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)  # before the group: a GPU per rank
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
    except Exception as exc:
        raise RankLost(
            f"rank {rank}: could not join the other {world - 1} rank(s) within {timeout:g} s: {exc}"
        ) from None
    return Ranks(rank, world, True, True, timeout, local)


def teardown(r: Ranks, finished: bool = True) -> None:
    """Tear the process group down. After a normal finish the ranks first meet at a barrier: gloo
    can abort ("terminate called without an active exception") when one rank destroys the group
    while another still uses it. After an error they do not wait, which could hang."""
    if r.owned:
        import torch.distributed as dist

        if dist.is_initialized():
            if finished:
                with suppress(Exception):  # a lost rank is reported elsewhere; never hang or mask it here
                    dist.barrier()
            dist.destroy_process_group()


def _lost(r: Ranks, what: str, exc: BaseException) -> RankLost:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return RankLost(
        f"rank {r.rank}: lost the other rank(s) while {what} (no answer within TLX_DIST_TIMEOUT={r.timeout_s:g} s, "
        f"or a rank died: {first}); re-run the same command to resume: finished parts are kept"
    )


def broadcast(r: Ranks, obj: Any, what: str) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not r.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0)
    except Exception as exc:
        raise _lost(r, what, exc) from None
    return box[0]


def gather(r: Ranks, obj: Any, what: str) -> list[Any]:
    """Every rank's ``obj`` on rank 0 (in rank order); other ranks get an empty list."""
    if not r.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * r.world if r.is_main else []
    try:
        dist.gather_object(obj, out if r.is_main else None, dst=0)
    except Exception as exc:
        raise _lost(r, what, exc) from None
    return out


def barrier(r: Ranks) -> None:
    if r.enabled:
        import torch.distributed as dist

        dist.barrier()


def shard(n: int, r: Ranks) -> range:
    """Rank ``r``'s contiguous share of ``n`` items. Contiguous shares keep each rank's part in
    path order, so the parts concatenated in rank order are the single-process order."""
    return range(r.rank * n // r.world, (r.rank + 1) * n // r.world)
