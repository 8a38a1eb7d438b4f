"""Fully sharded data parallelism (PyTorch's ``fully_shard``, FSDP2) for models too large for one device.

Each Transformer block is one FSDP unit (its parameters are gathered just before it runs and freed
after), and the root module holds the rest (embeddings, norms, heads). Checkpoints are always the
plain, full state dict under the model's own keys, gathered to rank 0, so a checkpoint written by N
ranks loads on any world size, with or without FSDP; :func:`load_full_state_dict` goes the other way.

Build the optimizer *after* :func:`shard_model`: sharding replaces the parameters.

Status: these helpers are tested with 2 Gloo ranks on CPU (``tests/engine/test_fsdp.py``, slow) but
not yet wired into the training commands (no ``--fsdp`` flag).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.fsdp import fully_shard

from maelab.models import MaskedAutoencoder


def shard_model(model: MaskedAutoencoder) -> MaskedAutoencoder:
    """Shard ``model`` in place across the default process group, one unit per block; returns it."""
    for block in (*model.blocks, *model.decoder_blocks):
        fully_shard(block)
    fully_shard(model)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain CPU tensors on rank 0 (empty on other ranks); a collective call."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict held by rank 0 (others may pass ``{}``) into a sharded model; a collective call."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
