"""Analytic FLOPs of a Masked Autoencoder, counted from its config (no tracing).

Only the matrix multiplications are counted (2 FLOPs per multiply-accumulate); LayerNorm,
softmax, GELU, the loss and the optimizer are left out, as in the usual MFU convention
(PaLM appendix B; Megatron). The backward pass costs twice the forward (one matmul for the
input gradient, one for the weight gradient), so a training step is 3x the forward.

Per image, with ``N`` tokens of width ``D`` and MLP ratio ``r``, one Transformer block costs
``N * (4 D^2 + 2 r D^2)`` MACs in its linear layers (qkv 3 D^2, output projection D^2, two MLP
layers r D^2 each) plus ``2 N^2 D`` MACs in attention (scores Q K^T and the weighted sum of V).
"""

from __future__ import annotations

from dataclasses import dataclass

from maelab.masking import num_visible
from maelab.models import MAEConfig


def block_macs(tokens: int, dim: int, mlp_ratio: float) -> float:
    """Multiply-accumulates of one pre-norm Transformer block on ``tokens`` tokens of width ``dim``."""
    linear = tokens * (4 * dim * dim + 2 * mlp_ratio * dim * dim)
    attention = 2 * tokens * tokens * dim
    return linear + attention


@dataclass(frozen=True)
class MAEFlops:
    """Forward FLOPs per image by part, and the derived totals."""

    patch_embed: float
    encoder: float
    decoder_embed: float
    decoder: float
    pred_head: float
    encoder_tokens: int
    """Tokens the encoder blocks see: 1 + visible patches (1 + all patches with mask tokens)."""

    @property
    def forward(self) -> float:
        return self.patch_embed + self.encoder + self.decoder_embed + self.decoder + self.pred_head

    @property
    def train_step(self) -> float:
        """Forward + backward (backward = 2x forward) per image."""
        return 3.0 * self.forward


def mae_flops(cfg: MAEConfig) -> MAEFlops:
    """FLOPs per image of one pre-training forward pass of ``cfg`` at its own mask ratio."""
    length = cfg.num_patches
    visible = length if cfg.encoder_mask_tokens else num_visible(length, cfg.mask_ratio)
    enc_tokens = 1 + visible
    dec_tokens = 1 + length
    macs = dict(
        # The patch projection is a linear map of every patch (masking happens after it).
        patch_embed=length * cfg.patch_dim * cfg.embed_dim,
        encoder=cfg.depth * block_macs(enc_tokens, cfg.embed_dim, cfg.mlp_ratio),
        decoder_embed=enc_tokens * cfg.embed_dim * cfg.decoder_embed_dim,
        decoder=cfg.decoder_depth * block_macs(dec_tokens, cfg.decoder_embed_dim, cfg.mlp_ratio),
        # The prediction head also runs on the cls position, which is dropped afterwards.
        pred_head=dec_tokens * cfg.decoder_embed_dim * cfg.patch_dim,
    )
    return MAEFlops(**{k: 2.0 * v for k, v in macs.items()}, encoder_tokens=enc_tokens)


def encoder_flops(cfg: MAEConfig) -> float:
    """Forward FLOPs per image of the encoder alone on every patch (inference / feature extraction)."""
    length = cfg.num_patches
    macs = length * cfg.patch_dim * cfg.embed_dim + cfg.depth * block_macs(1 + length, cfg.embed_dim, cfg.mlp_ratio)
    return 2.0 * macs
