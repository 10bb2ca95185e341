"""Data-parallel plumbing on torch.distributed: joining the process group that `torchrun` describes in the
environment (NCCL on GPUs, gloo on CPU), and the few collectives the trainer and evaluation need.

One process without torchrun is world size 1: every helper here is then a no-op, so single-process code
paths never touch torch.distributed.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trm import errors
from trm.errors import ConfigError, TRMError
from trm.models.base import pick_device

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_as_main() -> bool:
    """Whether torchrun (if any) made this process global rank 0: the one that speaks on the terminal."""
    return os.environ.get("RANK", "0") == "0"


def launched_under_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def data_parallel(d: Dist, module: torch.nn.Module) -> torch.nn.Module:
    """`module` under DDP when the run has several processes. DDP averages the dense gradients; buffers are
    not synced every forward, since the puzzle-embedding table (a buffer) is updated identically on every rank
    (SignSGDEmbedding gathers its rows). torch 2.13 names that `forward_sync_buffers`, older ones
    `broadcast_buffers`."""
    if not d.active:
        return module
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    option = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return DistributedDataParallel(module, **{option: False})


def init(device_name: str = "auto") -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT), or stay a
    single process. On CUDA each process takes the GPU of its local rank."""
    device = pick_device(device_name)
    if not launched_under_torchrun():
        return Dist(0, 1, device)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local} but only {torch.cuda.device_count()} GPU(s) on this machine")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"distributed runs need CUDA (NCCL) or the CPU (gloo), not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def run_then_leave(d: Dist, work: Callable[[], T]) -> T:
    """`work()`, then leave the process group, once all that `work` made is gone (also after an error).

    DDP's reducer holds the process group. Were it freed after destroy_process_group, its dealloc would
    destroy gloo's group with the GIL held and join gloo's threads, one of which may be waiting for the GIL
    to free a tensor: a run that hangs at its very end (seen in a test). So the frames of an error are
    cleared (its message and traceback lines stay), the garbage collected, and only then the group left.
    One process has no group: `work()` alone, its error's frames kept for a post-mortem debugger."""
    if not d.active:
        return work()
    try:
        return work()
    except BaseException as err:
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        gc.collect()
        shutdown(d)


@contextlib.contextmanager
def together(d: Dist) -> Iterator[None]:
    """A block that may fail on some ranks only (a data set or checkpoint missing on one machine): failing on
    any rank, it fails on all, each raising the first failing rank's error: every machine says what went wrong,
    instead of failing in the next collective (DDP's first broadcast) with gloo's "connection closed by peer",
    which names no cause, or waiting there for a process that has gone."""
    if not d.active:
        yield
        return
    failure = None
    try:
        yield
    except Exception as err:  # re-raised below, on every rank
        failure = (_user_error_class(err), str(err), d.rank)
        mine = err
    failures: list[tuple[str, str, int] | None] = [None] * d.world_size
    dist.all_gather_object(failures, failure)
    first = next((f for f in failures if f is not None), None)
    if first is None:
        return
    if failure is not None:
        raise mine
    kind, message, rank = first
    raise (getattr(errors, kind) if kind else RuntimeError)(f"rank {rank}: {message}")


def _user_error_class(err: Exception) -> str:
    """The nearest class of `err` that trm.errors defines ("" for an error that is not the user's), so that
    the other ranks raise the same kind of error (HubError, a CheckpointError elsewhere, as CheckpointError)."""
    if not isinstance(err, TRMError):
        return ""
    return next(c.__name__ for c in type(err).__mro__ if getattr(errors, c.__name__, None) is c)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def all_reduce_sum(d: Dist, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (returns the tensor)."""
    if d.active:
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(d: Dist, obj: T) -> T:
    """Rank 0's `obj` (anything picklable, tensors included) on every rank."""
    if not d.active:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0, device=d.device)
    return box[0]


def all_agree(d: Dist, flag: bool) -> bool:
    """Whether `flag` holds on every rank (so that all ranks take the same branch, or all fail together)."""
    if not d.active:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def broadcast_float(d: Dist, value: float) -> float:
    """Rank 0's value on every rank (so decisions such as "the time budget is spent" agree)."""
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.broadcast(t, src=0)
    return float(t.item())


def gather_rows(d: Dist, t: torch.Tensor) -> torch.Tensor | None:
    """Every rank's rows concatenated in rank order on rank 0 (None elsewhere); all ranks pass the same shape."""
    if not d.active:
        return t
    boolean = t.dtype == torch.bool  # gloo has no bool collectives
    t = (t.to(torch.uint8) if boolean else t).contiguous()
    parts = [torch.empty_like(t) for _ in range(d.world_size)] if d.is_main else None
    dist.gather(t, parts, dst=0)
    if not d.is_main:
        return None
    out = torch.cat(parts)
    return out.bool() if boolean else out
