"""Official-format MAE state dicts built in memory from the public key layout of the reference
code's ``models_mae.py`` (no downloads): names and shapes are written out here, independently
of maelab's own modules."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
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


@pytest.fixture
def official_files(tmp_path) -> dict[str, Path]:
    """The three release kinds, small: encoder-only, *_full (norm pixels), visualize (raw pixels)."""
    full = official_state_dict(seed=1)
    return {
        "encoder": save_official(tmp_path / "mae_pretrain_vit_tiny.pth", official_state_dict(decoder=False, seed=2)),
        "full": save_official(tmp_path / "mae_pretrain_vit_tiny_full.pth", full),
        "visualize": save_official(tmp_path / "mae_visualize_vit_tiny.pth", official_state_dict(seed=3)),
    }


def perturb(model: torch.nn.Module, seed: int, skip: tuple[str, ...] = ()) -> None:
    """Move every tensor off its structured init (zero biases, unit norms), so that a mis-mapped
    tensor cannot hide behind an identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point() and name not in skip:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture
def maelab_checkpoint(tmp_path) -> Path:
    """A maelab "mae" checkpoint: the debug preset with 3 channels, perturbed weights (sin-cos
    position tables kept, as training keeps them fixed)."""
    from maelab.engine.checkpoint import CheckpointMeta, save_checkpoint
    from maelab.models import create_model

    torch.manual_seed(0)
    model = create_model("debug", in_chans=3)
    perturb(model, 1, skip=("pos_embed", "decoder_pos_embed"))
    info = dict(name="synthetic", channels=3, img_size=[32, 32], mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                num_classes=0, class_names=[])
    meta = CheckpointMeta(kind="mae", model_config=model.config.to_dict(), data_info=info, epoch=1,
                          extra={"model_name": "debug"})
    return save_checkpoint(tmp_path / "ckpt" / "checkpoint-last", model.state_dict(), meta)
