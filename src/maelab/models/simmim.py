"""SimMIM (Xie et al. 2021): masked image modeling with the whole image in the encoder.

The encoder sees every patch, masked ones replaced by a learned token; one linear layer maps
each encoded patch to its pixels (SimMIM's 1x1 conv + pixel shuffle, written per patch), and the
loss is the L1 error on masked pixels. Masks are drawn on a coarser grid of mask blocks.

The encoder's parameter names are timm ``VisionTransformer`` keys, exactly as in
:class:`~maelab.models.mae.MaskedAutoencoder`; ``mask_token`` and ``decoder_pred`` are not part
of it. The forward pass returns the same :class:`MAEOutput`, so pre-training, checkpoints and
the evaluation commands treat both models alike.
"""

from __future__ import annotations

import torch
from torch import nn

from maelab.masking import PixelMask, coarse_random_masking
from maelab.models.mae import MAEConfig, MAEOutput, is_decoder_key
from maelab.models.vit_parts import (
    add_vit_encoder,
    check_inputs,
    init_linear_and_norm,
    init_patch_embed,
    prepend_cls,
    replace_masked,
    run_blocks,
)
from maelab.pos_embed import sincos_2d
from maelab.targets import make_target, masked_l1


class SimMIM(nn.Module):
    """A ViT encoder over all patches (mask tokens in place of masked ones) and a linear pixel head."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        if config.arch != "simmim":
            raise ValueError(f"SimMIM builds arch 'simmim', not {config.arch!r}; use maelab.models.build_model")
        self.config = config
        c = config
        # MAE's encoder (fixed sin-cos positions too), so the two differ only in what they are trained on.
        add_vit_encoder(self, c)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.decoder_pred = nn.Linear(c.embed_dim, c.patch_dim)
        self.grad_checkpointing = False
        self.reset_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's name)."""
        self.grad_checkpointing = enable

    def reset_parameters(self) -> None:
        c = self.config
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(c.embed_dim, c.grid_size).unsqueeze(0))
        init_patch_embed(self.patch_embed)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_and_norm(self)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under timm ``VisionTransformer`` keys (mask token and head dropped)."""
        return {k: v for k, v in self.state_dict().items() if not is_decoder_key(k)}

    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode every patch, masked ones replaced by the mask token.

        Args:
            imgs: (B, C, H, W).
            mask: (B, L), 1 = masked; None encodes the image as it is (as timm does).
        Returns:
            (B, 1 + L, D).
        """
        x = self.patch_embed(imgs)  # (B, L, D)
        if mask is not None:
            x = replace_masked(x, mask, self.mask_token)  # (B, L, D)
        x = prepend_cls(self, x + self.pos_embed[:, 1:, :])  # (B, 1 + L, D)
        x = run_blocks(self.blocks, x, self.grad_checkpointing and self.training and torch.is_grad_enabled())
        return self.norm(x)

    def sample_mask(
        self,
        batch: int,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        strategy: str | None = None,
        device: torch.device | str | None = None,
    ) -> PixelMask:
        """Draw SimMIM's coarse random mask with this model's default (or the given) ratio."""
        if strategy not in (None, "random"):
            raise ValueError(f"SimMIM draws random masks on its coarse grid; mask strategy {strategy!r} "
                             "is not available")
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        device = self.pos_embed.device if device is None else device
        c = self.config
        return PixelMask(coarse_random_masking(batch, c.grid_size, ratio, c.mask_patch_size, generator, device))

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Mask, encode, predict pixels and score a batch.

        Args:
            imgs: (B, C, H, W) normalized images.
            mask_ratio: fraction of mask blocks to hide; defaults to the config's.
            mask: optional explicit (B, L) mask (1 = hidden); samples may hide different counts.
            generator: source of randomness for the mask.
        """
        c = self.config
        check_inputs(c, imgs, mask)
        if mask is None:
            mask = self.sample_mask(imgs.shape[0], mask_ratio, generator, device=imgs.device).mask  # (B, L)
        else:
            mask = mask.to(device=imgs.device, dtype=torch.float32)  # (B, L)
            if not bool(((mask == 0) | (mask == 1)).all()) or not bool(mask.sum(1).gt(0).all()):
                raise ValueError("mask must hold only 0 (visible) and 1 (masked), with a masked patch in every sample")
        latent = self.forward_encoder(imgs, mask)  # (B, 1 + L, D)
        pred = self.decoder_pred(latent[:, 1:, :])  # (B, L, p*p*C)
        with torch.autocast(imgs.device.type, enabled=False):
            target = make_target(imgs.float(), c.patch_size, c.target)  # (B, L, p*p*C)
        loss = masked_l1(pred.float(), target, mask, c.loss_on_all)
        return MAEOutput(loss=loss, pred=pred, mask=mask)
