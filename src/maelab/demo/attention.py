"""Where the encoder looks: the cls token's attention in the last encoder block.

The model holds architecture only, so the attention weights are recomputed here from the
block's own ``attn.qkv`` projection on the block's input, instead of being returned by the
model's forward pass. Heads are averaged, as in the usual single-map visualizations.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block

from maelab.masking import MaskSample
from maelab.models import MaskedAutoencoder


def block_cls_attention(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the cls token (token 0) over all tokens, averaged over heads.

    Args:
        block: a timm ViT ``Block`` whose attention is plain scaled dot-product attention.
        x: (B, N, D) the block's input, cls token first.
    Returns:
        (B, N) attention weights of the cls query; each row sums to 1.
    """
    attn = block.attn
    batch, tokens, _ = x.shape
    qkv = attn.qkv(block.norm1(x))  # (B, N, 3 * h * d)
    qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (B, h, N, d) each
    scores = (q[:, :, :1, :] * attn.scale) @ k.transpose(-2, -1)  # (B, h, 1, N): the cls query only
    return scores.softmax(dim=-1).mean(dim=1).squeeze(1)  # (B, N)


@torch.no_grad()
def cls_attention_map(model: MaskedAutoencoder, imgs: torch.Tensor, sample: MaskSample) -> torch.Tensor:
    """The cls token's last-block attention over the visible patches, in patch order.

    Args:
        imgs: (B, C, H, W) normalized images.
        sample: the mask the encoder runs with.
    Returns:
        (B, L) attention per patch, 0 on masked patches, renormalized so that each row
        sums to 1 over the visible patches (the share the cls token gives to itself is left out).
    """
    x = model.embed_tokens(imgs, sample)  # (B, 1 + L_enc, D)
    for block in model.blocks[:-1]:
        x = block(x)
    weights = block_cls_attention(model.blocks[-1], x)[:, 1:]  # (B, L_enc)
    batch, length = sample.mask.shape
    if model.config.encoder_mask_tokens:
        # The encoder saw every patch in patch order; keep only what was visible.
        per_patch = weights * (1.0 - sample.mask)  # (B, L)
    else:
        per_patch = torch.zeros(batch, length, dtype=weights.dtype, device=weights.device)  # (B, L)
        per_patch.scatter_(1, sample.ids_keep, weights)  # (B, L)
    return per_patch / per_patch.sum(dim=1, keepdim=True).clamp_min(1e-12)  # (B, L)
