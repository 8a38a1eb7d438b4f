"""ViT pieces MAE and SimMIM share: the timm-keyed encoder, the input check and the reference init.

Functions, not a module class, so each model keeps flat parameter names (timm's keys) at its top level.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:  # mae.py imports this module
    from maelab.models.config import MAEConfig

# LayerNorm eps 1e-6 everywhere, as in the reference code and timm's ViT.
layer_norm = partial(nn.LayerNorm, eps=1e-6)


def add_vit_encoder(module: nn.Module, c: MAEConfig) -> None:
    """Give ``module`` a ViT encoder whose names and shapes are timm's ``VisionTransformer``'s.

    The position table is fixed 2-D sin-cos (filled by the owner's ``reset_parameters``).
    """
    module.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
    module.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
    module.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.embed_dim), requires_grad=False)
    module.blocks = nn.ModuleList(
        Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=layer_norm) for _ in range(c.depth)
    )
    module.norm = layer_norm(c.embed_dim)


def check_inputs(c: MAEConfig, imgs: torch.Tensor, mask: torch.Tensor | None) -> None:
    """ValueError unless ``imgs`` is (B, C, H, W) for this config and ``mask`` (if given) is (B, L)."""
    if imgs.ndim != 4 or imgs.shape[1] != c.in_chans or tuple(imgs.shape[-2:]) != c.img_size:
        raise ValueError(
            f"expected images of shape (B, {c.in_chans}, {c.img_size[0]}, {c.img_size[1]}); got {tuple(imgs.shape)}"
        )
    if mask is not None and mask.shape != (imgs.shape[0], c.num_patches):
        raise ValueError(f"mask must have shape {(imgs.shape[0], c.num_patches)}; got {tuple(mask.shape)}")


def init_patch_embed(patch_embed: PatchEmbed) -> None:
    """The patch projection is a linear map of flattened patches, initialized as one (xavier, zero bias)."""
    weight = patch_embed.proj.weight
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    nn.init.zeros_(patch_embed.proj.bias)


def init_linear_and_norm(root: nn.Module) -> None:
    """The reference initialization of every Linear (xavier-uniform, zero bias) and LayerNorm (1, 0) in ``root``."""
    for module in root.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def replace_masked(x: torch.Tensor, mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Patch embeddings (B, L, D) with the masked ones (``mask`` (B, L), 1 = masked) replaced by ``token``."""
    w = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
    return x * (1.0 - w) + token.to(x.dtype) * w  # (B, L, D)


def prepend_cls(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, 1 + N, D): the cls token (with its position embedding) first."""
    cls = (module.cls_token + module.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)  # (B, 1, D)
    return torch.cat([cls, x], dim=1)  # (B, 1 + N, D)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointed: bool) -> torch.Tensor:
    """(B, N, D) -> (B, N, D) through ``blocks``; ``checkpointed`` recomputes activations in the backward pass."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
    return x
