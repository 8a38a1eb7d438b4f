"""Official-format MAE state dicts built in memory from the public key layout of the reference
code's ``models_mae.py`` (no downloads): names and shapes are written out here, independently
of maelab's own modules."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def _linear(sd, name, out_dim, in_dim, g):
    sd[f"{name}.weight"] = 0.1 * torch.randn(out_dim, in_dim, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(out_dim, generator=g)


def _norm(sd, name, dim, g):
    sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
    sd[f"{name}.bias"] = 0.1 * torch.randn(dim, generator=g)


def _block(sd, prefix, dim, mlp_ratio, g):
    _norm(sd, f"{prefix}.norm1", dim, g)
    _linear(sd, f"{prefix}.attn.qkv", 3 * dim, dim, g)
    _linear(sd, f"{prefix}.attn.proj", dim, dim, g)
    _norm(sd, f"{prefix}.norm2", dim, g)
    _linear(sd, f"{prefix}.mlp.fc1", int(dim * mlp_ratio), dim, g)
    _linear(sd, f"{prefix}.mlp.fc2", dim, int(dim * mlp_ratio), g)


def official_state_dict(
    embed_dim=128, depth=2, decoder_dim=64, decoder_depth=1, patch=8, chans=3, grid=2, mlp_ratio=4.0,
    decoder=True, seed=0,
) -> dict[str, torch.Tensor]:
    """The reference MaskedAutoencoderViT's state dict with random (non-identity) values.

    Position tables are random too (not sin-cos), so a dropped or swapped table cannot hide.
    """
    g = torch.Generator().manual_seed(seed)
    n = grid * grid
    sd: dict[str, torch.Tensor] = {
        "cls_token": 0.1 * torch.randn(1, 1, embed_dim, generator=g),
        "pos_embed": 0.1 * torch.randn(1, n + 1, embed_dim, generator=g),
        "patch_embed.proj.weight": 0.1 * torch.randn(embed_dim, chans, patch, patch, generator=g),
        "patch_embed.proj.bias": 0.1 * torch.randn(embed_dim, generator=g),
    }
    for i in range(depth):
        _block(sd, f"blocks.{i}", embed_dim, mlp_ratio, g)
    _norm(sd, "norm", embed_dim, g)
    if decoder:
        _linear(sd, "decoder_embed", decoder_dim, embed_dim, g)
        sd["mask_token"] = 0.1 * torch.randn(1, 1, decoder_dim, generator=g)
        sd["decoder_pos_embed"] = 0.1 * torch.randn(1, n + 1, decoder_dim, generator=g)
        for i in range(decoder_depth):
            _block(sd, f"decoder_blocks.{i}", decoder_dim, mlp_ratio, g)
        _norm(sd, "decoder_norm", decoder_dim, g)
        _linear(sd, "decoder_pred", patch * patch * chans, decoder_dim, g)
    return sd


def save_official(path: Path, sd: dict[str, torch.Tensor], args: argparse.Namespace | None = None) -> Path:
    """Saved as the reference code does: ``{"model": state_dict}`` (plus ``args`` from a training run)."""
    obj = {"model": sd} if args is None else {"model": sd, "args": args, "epoch": 799}
    torch.save(obj, path)
    return path
