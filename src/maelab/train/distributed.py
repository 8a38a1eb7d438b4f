"""Data-parallel training under ``torchrun``: process group, DDP wrapping, sampling, reductions.

Launch any training command with torchrun and it runs data-parallel (Gloo on CPUs, NCCL on GPUs)::

    torchrun --nproc-per-node 2 -m maelab pretrain --model debug --dataset synthetic --batch-size 32

Nothing happens at import time; :func:`init_from_env` reads torchrun's variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) when a command starts and returns the result as values.
Results do not depend on the world size: every rank draws the masks of the whole global batch
and keeps its own rows (:func:`rank_rows`), and each rank loads its share of the epoch's order
with per-image augmentation seeds (:func:`maelab.train.loader.make_loader_fn`), so N ranks with
per-device batch B follow the same trajectory as one process with batch N x B (up to float
summation order).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistState:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def env_rank() -> int:
    """The global rank torchrun gave this process (0 outside torchrun); for choosing a log level."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: torch.device) -> tuple[torch.device, DistState]:
    """Join the process group torchrun describes; returns this rank's device and its place.

    Outside torchrun (or with WORLD_SIZE=1) nothing is initialized and the device is unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, DistState()
    try:
        state = DistState(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ["LOCAL_RANK"]))
    except KeyError as exc:
        raise ValueError(f"WORLD_SIZE={world} but {exc} is not set; launch with torchrun") from exc
    if device.type == "cuda":
        if state.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {state.local_rank} but only {torch.cuda.device_count()} GPUs on this node; "
                             "lower --nproc-per-node")
        device = torch.device("cuda", state.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    logger.info("rank %d of %d on %s (%s)", state.rank, world, device, dist.get_backend())
    return device, state


def shutdown(wait: bool = True) -> None:
    """Leave the process group; with ``wait`` every rank waits for the others first.

    A command that failed leaves without waiting (the others may never arrive), but it still
    destroys the group: a Gloo group left to the interpreter's exit can abort it ("terminate
    called without an active exception") while its threads are torn down.
    """
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def agree(value):
    """Rank 0's ``value`` on every rank (e.g. a run directory named after the clock); a collective call."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(model: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when running on several ranks, else itself.

    Only parameters that require grad are synchronized, so frozen encoders cost nothing. A model
    sharded by FSDP (:mod:`maelab.train.fsdp`), or holding one, synchronizes itself and is returned as is.
    """
    if world_size <= 1 or _fsdp_root(model) is not None or not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def maybe_no_sync(net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's all-reduce (FSDP's reduce-scatter) of the gradients on accumulation micro-steps
    (it runs once, on the last one)."""
    if not sync and isinstance(net, nn.parallel.DistributedDataParallel):
        return net.no_sync()
    root = None if sync else _fsdp_root(net)
    if root is not None:
        return _fsdp_no_sync(root)
    return contextlib.nullcontext()


def _fsdp_root(model: nn.Module) -> nn.Module | None:
    """The outermost FSDP module in ``model`` (itself, or a sharded model inside a plain wrapper)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not loaded: nothing was sharded (see maelab.train.fsdp)
    if fsdp is None:
        return None
    return next((m for m in model.modules() if isinstance(m, fsdp.FSDPModule)), None)


@contextlib.contextmanager
def _fsdp_no_sync(net: nn.Module):
    net.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        net.set_requires_gradient_sync(True)


def all_reduce_mean(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy); the value itself on one rank."""
    if world_size <= 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (a collective call; ``flag`` itself on one rank)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)


def rank_rows(rows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's rows of a tensor drawn for the whole global batch: (N*B, ...) -> (B, ...)."""
    return rows[rank::world_size]


def steps_per_epoch(num_items: int, batch_size: int, world_size: int) -> int:
    """Optimizer-loop iterations per epoch when each rank takes ``batch_size`` items per step."""
    return num_items // (batch_size * world_size)
