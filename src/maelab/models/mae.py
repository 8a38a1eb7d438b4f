"""The Masked Autoencoder: a ViT encoder on visible patches and a light decoder.

Parameter names are flat, as in the paper's reference code: the encoder's keys are exactly
timm's ``VisionTransformer`` keys (``patch_embed.proj.*``, ``cls_token``, ``pos_embed``,
``blocks.N.*``, ``norm.*``) and everything else starts with ``decoder_`` or ``mask_token``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import nn

from maelab.masking import MaskSample, mask_from_binary, sample_mask
from maelab.models.config import MAEConfig
from maelab.models.vit_parts import (
    add_vit_encoder,
    check_inputs,
    init_linear_and_norm,
    init_patch_embed,
    layer_norm,
    prepend_cls,
    replace_masked,
    run_blocks,
)
from maelab.pos_embed import sincos_2d
from maelab.targets import PCABasis, make_target, masked_mse


@dataclass(frozen=True)
class MAEOutput:
    """What one forward pass returns, whatever the configuration.

    Attributes:
        loss: scalar reconstruction loss.
        pred: (B, L, D) prediction for every patch, in the target's space (D = p*p*C for
            pixel targets, k for "pca", the HOG length for "hog").
        mask: (B, L) 0 = visible, 1 = masked.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


class MaskedAutoencoder(nn.Module):
    """MAE with a ViT encoder and a Transformer decoder (He et al. 2021)."""

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        if config.arch != "mae":
            raise ValueError(f"MaskedAutoencoder builds arch 'mae', not {config.arch!r}; use maelab.models.build_model")
        self.config = config
        c = config
        add_vit_encoder(self, c)
        # Decoder.
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        if c.encoder_mask_tokens:
            # The learned token lives in the encoder; the decoder then has nothing to fill in.
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, c.num_patches + 1, c.decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=layer_norm)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = layer_norm(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.target_dim)
        self.grad_checkpointing = False
        if c.target == "pca":
            # Fitted on training patches by pre-training (set_pca_basis) and saved with the weights;
            # std stays 0 until then, which forward() refuses.
            k, dim = c.num_pca_components, c.patch_dim
            self.register_buffer("target_pca_mean", torch.zeros(dim))
            self.register_buffer("target_pca_std", torch.zeros(dim))
            self.register_buffer("target_pca_components", torch.zeros(k, dim))
            self.register_buffer("target_pca_variance", torch.zeros(k))
        self.reset_parameters()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's name).

        A run-time switch, not architecture: it changes memory and speed, never the result.
        """
        self.grad_checkpointing = enable

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D) through ``blocks``, checkpointed when enabled and training."""
        return run_blocks(blocks, x, self.grad_checkpointing and self.training and torch.is_grad_enabled())

    def reset_parameters(self) -> None:
        """Initialization of the paper's reference code."""
        c = self.config
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(c.embed_dim, c.grid_size).unsqueeze(0))
            self.decoder_pos_embed.copy_(sincos_2d(c.decoder_embed_dim, c.grid_size).unsqueeze(0))
        init_patch_embed(self.patch_embed)
        nn.init.normal_(self.cls_token, std=0.02)
        token = self.encoder_mask_token if c.encoder_mask_tokens else self.mask_token
        nn.init.normal_(token, std=0.02)
        init_linear_and_norm(self)

    # ------------------------------------------------------------------ PCA target
    def set_pca_basis(self, basis: PCABasis) -> None:
        """Install the PCA basis the "pca" target projects onto (fitted with ``targets.fit_pca``)."""
        c = self.config
        if c.target != "pca":
            raise ValueError(f"this model's target is {c.target!r}; a PCA basis applies only to target 'pca'")
        expected = (c.num_pca_components, c.patch_dim)
        if tuple(basis.components.shape) != expected:
            raise ValueError(f"PCA basis has components {tuple(basis.components.shape)}; the model needs {expected}")
        with torch.no_grad():
            self.target_pca_mean.copy_(basis.mean)
            self.target_pca_std.copy_(basis.std)
            self.target_pca_components.copy_(basis.components)
            self.target_pca_variance.copy_(basis.variance)

    def pca_basis(self) -> PCABasis | None:
        """The stored PCA basis (None for other targets); ValueError if it was never fitted."""
        if self.config.target != "pca":
            return None
        if not bool((self.target_pca_std > 0).all()):
            raise ValueError("the PCA target's basis is not fitted: call set_pca_basis(fit_pca(...)) before training")
        return PCABasis(self.target_pca_mean, self.target_pca_std, self.target_pca_components, self.target_pca_variance)

    # ------------------------------------------------------------------ encoder
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under timm ``VisionTransformer`` keys (decoder dropped)."""
        return {k: v for k, v in self.state_dict().items() if not is_decoder_key(k)}

    def forward_encoder(self, imgs: torch.Tensor, sample: MaskSample | None = None) -> torch.Tensor:
        """Encode visible patches.

        Args:
            imgs: (B, C, H, W).
            sample: which patches are visible; None encodes every patch (as timm does).
        Returns:
            (B, 1 + L_enc, D) with L_enc = L_keep, or L when mask tokens go through the
            encoder or no mask is given.
        """
        x = self.embed_tokens(imgs, sample)  # (B, 1 + L_enc, D)
        x = self._run_blocks(self.blocks, x)  # (B, 1 + L_enc, D)
        return self.norm(x)

    def embed_tokens(self, imgs: torch.Tensor, sample: MaskSample | None = None) -> torch.Tensor:
        """The encoder's input tokens: patch embeddings (visible ones, or all), position embedding, cls first.

        Args:
            imgs: (B, C, H, W).
            sample: which patches are visible; None keeps every patch.
        Returns:
            (B, 1 + L_enc, D), what the first encoder block receives.
        """
        x = self.patch_embed(imgs)  # (B, L, D)
        if sample is not None and self.config.encoder_mask_tokens:
            x = replace_masked(x, sample.mask, self.encoder_mask_token)  # (B, L, D)
        x = x + self.pos_embed[:, 1:, :]  # (B, L, D)
        if sample is not None and not self.config.encoder_mask_tokens:
            index = sample.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, L_keep, D)
            x = torch.gather(x, 1, index)  # (B, L_keep, D)
        return prepend_cls(self, x)  # (B, 1 + L_enc, D)

    # ------------------------------------------------------------------ decoder
    def forward_decoder(self, latent: torch.Tensor, sample: MaskSample) -> torch.Tensor:
        """Predict every patch's pixels from the encoded tokens.

        Args:
            latent: (B, 1 + L_enc, D) encoder output.
            sample: the mask the encoder used.
        Returns:
            (B, L, D) predictions in patch order (cls dropped), D = ``config.target_dim``.
        """
        x = self.decoder_embed(latent)  # (B, 1 + L_enc, Dd)
        if not self.config.encoder_mask_tokens:
            batch, length = sample.ids_restore.shape
            fill = self.mask_token.to(x.dtype).expand(batch, length - sample.num_keep, -1)  # (B, L_mask, Dd)
            patches = torch.cat([x[:, 1:, :], fill], dim=1)  # (B, L, Dd), shuffled order
            index = sample.ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, L, Dd)
            patches = torch.gather(patches, 1, index)  # (B, L, Dd), patch order
            x = torch.cat([x[:, :1, :], patches], dim=1)  # (B, 1 + L, Dd)
        x = x + self.decoder_pos_embed  # (B, 1 + L, Dd)
        x = self._run_blocks(self.decoder_blocks, x)  # (B, 1 + L, Dd)
        x = self.decoder_pred(self.decoder_norm(x))  # (B, 1 + L, D)
        return x[:, 1:, :]  # (B, L, D)

    # ------------------------------------------------------------------ full model
    def sample_mask(
        self,
        batch: int,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        strategy: str | None = None,
        device: torch.device | str | None = None,
    ) -> MaskSample:
        """Draw a mask with this model's default (or the given) ratio and strategy."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        strategy = self.config.mask_strategy if strategy is None else strategy
        device = self.pos_embed.device if device is None else device
        return sample_mask(strategy, batch, self.config.grid_size, ratio, generator, device)

    def forward(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """Mask, encode, decode and score a batch.

        Args:
            imgs: (B, C, H, W) normalized images.
            mask_ratio: fraction of patches to hide; defaults to the config's.
            mask: optional explicit (B, L) mask (1 = hidden) that overrides sampling.
            generator: source of randomness for the mask.
        """
        c = self.config
        check_inputs(c, imgs, mask)
        if mask is not None:
            sample = mask_from_binary(mask.to(imgs.device))
        else:
            sample = self.sample_mask(imgs.shape[0], mask_ratio, generator, device=imgs.device)
        latent = self.forward_encoder(imgs, sample)  # (B, 1 + L_enc, D)
        pred = self.forward_decoder(latent, sample)  # (B, L, D)
        # Targets in full precision: under bf16 autocast the PCA projection and HOG filters would round.
        with torch.autocast(imgs.device.type, enabled=False):
            target = make_target(imgs.float(), c.patch_size, c.target, pca=self.pca_basis())  # (B, L, D)
        loss = masked_mse(pred.float(), target.float(), sample.mask, c.loss_on_all)
        return MAEOutput(loss=loss, pred=pred, mask=sample.mask)


def is_decoder_key(key: str) -> bool:
    """True for the decoder's tensors, mask tokens and target buffers: what a timm encoder does not have."""
    # target_* buffers (the PCA basis) belong to the objective, not the encoder.
    return key.startswith(("decoder_", "target_")) or key in ("mask_token", "encoder_mask_token")
