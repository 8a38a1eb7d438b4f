"""Fully sharded data parallelism (PyTorch's ``fully_shard``, FSDP2) for models too large for one device.

``torchrun --nproc-per-node N -m maelab pretrain ... --fsdp`` shards the model: each Transformer
block is one FSDP unit (its parameters are gathered just before it runs and freed after), and the
root module holds the rest (embeddings, norms, heads). Gradients are reduce-scattered (averaged over
ranks, as DDP does), so the run follows the same trajectory as DDP or one process with the global
batch.

Checkpoints are always the plain, full state dict under the model's own keys, gathered to rank 0
(and the optimizer's state under parameter names), so a checkpoint written by N ranks loads on any
world size, with or without FSDP. Gathering is a collective: every rank calls the save function,
rank 0 writes.

:func:`build_sharded` builds a sharded model without the whole model ever on a device: rank 0 builds it
in host memory, every rank builds a weightless copy on the meta device, shards it, and receives its
shards of rank 0's weights. Build the optimizer *after* sharding: it replaces the parameters.
:func:`load_model_state` and :func:`load_optimizer_state` load full checkpoints into a sharded or
plain model; the latter takes either kind of optimizer state (a plain ``optimizer.state_dict()`` or
a full, name-keyed one). :func:`maelab.train.resume.save_point` gathers and writes them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

# FSDP and its state-dict helpers are imported inside the functions that shard: a run without --fsdp (and
# `maelab --help`) never loads them, and a torch build without them breaks only --fsdp.
FSDP_MODULE = "torch.distributed.fsdp"


def shard_model(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place across the default process group, one unit per block; returns it.

    Blocks are ``model.blocks`` and, for an MAE, ``model.decoder_blocks``.
    """
    from torch.distributed.fsdp import fully_shard

    for block in (*model.blocks, *getattr(model, "decoder_blocks", ())):
        fully_shard(block)
    fully_shard(model)
    return model


def build_sharded(build: Callable[[bool], nn.Module], device: torch.device, is_main: bool) -> nn.Module:
    """The model ``build(True)`` makes on rank 0, sharded across the default process group on ``device``.

    ``build(materialize)`` makes the model with its final structure and ``requires_grad`` flags;
    with ``materialize=False`` it runs under the meta device and may skip setting weights. Rank 0
    calls ``build(True)`` in host memory; its weights reach the shards by broadcast, so no device
    ever holds the whole model (only rank 0's host memory does, once). A collective call.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = build(True).state_dict() if is_main else {}
    with torch.device("meta"):
        model = build(False)  # shapes and flags only: no memory, no initialization work
    shard_model(model)
    model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def check_launch(fsdp: bool, world_size: int, command: str) -> None:
    """ValueError naming the fix when ``--fsdp`` is asked for outside a distributed launch."""
    if fsdp and world_size < 2:
        raise ValueError(f"--fsdp shards the model across the processes of a distributed launch, but this is one "
                         f"process; launch with torchrun --nproc-per-node N (N >= 2) -m maelab {command} ... --fsdp, "
                         "or drop --fsdp")


def is_sharded(model: nn.Module) -> bool:
    # Only fully_shard makes an FSDPModule, and it imports FSDP first: while FSDP is not loaded, nothing is sharded.
    fsdp = sys.modules.get(FSDP_MODULE)
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()``; gathered whole onto rank 0 when ``model`` is sharded (a collective call then)."""
    return full_state_dict(model) if is_sharded(model) else model.state_dict()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain CPU tensors on rank 0 (empty on other ranks); a collective call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (held by every rank) into ``model``, sharded (each rank keeps its shards) or not."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's whole state keyed by parameter name, as CPU tensors on rank 0; a collective call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a plain or a name-keyed full optimizer state into ``optimizer`` of ``model`` (sharded or not).

    Every rank passes the whole state (each keeps its shard); a collective call on a sharded model.
    """
    if not any(isinstance(key, str) for key in state.get("state", {})) and not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, _by_name(model, optimizer, state),
                             options=StateDictOptions(full_state_dict=True))


def _by_name(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A plain ``optimizer.state_dict()`` (parameters numbered in group order) keyed by parameter name."""
    if any(isinstance(key, str) for key in state.get("state", {})) or not state.get("param_groups"):
        return state
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [dict(group, params=[order[i] for i in group["params"]]) for group in state["param_groups"]]
    return {"state": {order[i]: value for i, value in state["state"].items()}, "param_groups": groups}
