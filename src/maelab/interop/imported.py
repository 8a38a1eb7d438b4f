"""A model read from any supported source, in maelab's own key layout."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maelab.data import DatasetInfo
from maelab.models import build_model, weights_mismatch
from maelab.models.mae import MAEConfig, MaskedAutoencoder, is_decoder_key
from maelab.pos_embed import adapt_pos_embed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalization the official MAE releases (and Hugging Face's ViT-MAE) were trained with."""


def imagenet_info(img_size: tuple[int, int]) -> DatasetInfo:
    """Statistics for showing an RGB model trained on ImageNet in viewable pixels."""
    return DatasetInfo(name="imagenet", channels=3, img_size=tuple(img_size), mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, num_classes=0, class_names=())


@dataclass(frozen=True)
class ImportedModel:
    """Weights under maelab keys (encoder keys == timm's), with what is known about them.

    Attributes:
        config: the architecture; ``config.target`` says what the decoder predicts.
        weights: every tensor of the file under maelab names; the encoder's only when
            ``has_decoder`` is False.
        origin: "maelab", "official" (a reference-code ``.pth``) or "hf" (a transformers directory).
        target_source: how ``config.target`` was decided (shown to the user).
        data_info: normalization statistics for viewable pixels, when known.
        data: the DataConfig (JSON form) a maelab run was trained with; empty otherwise.
    """

    path: Path
    config: MAEConfig
    weights: dict[str, torch.Tensor]
    has_decoder: bool
    origin: str
    target_source: str
    data_info: DatasetInfo | None = None
    data: dict[str, Any] = field(default_factory=dict)
    name: str = "mae"

    def __post_init__(self) -> None:
        check_weights(self.config, self.weights, self.has_decoder, self.path)

    def encoder_weights(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors under timm ``VisionTransformer`` keys."""
        return {k: v for k, v in self.weights.items() if not is_decoder_key(k)}

    def build(self, require_decoder: bool = True) -> MaskedAutoencoder:
        """A MaskedAutoencoder in eval mode holding these weights.

        With ``require_decoder=False`` an encoder-only file gives a model whose decoder keeps its
        fresh initialization: use only its encoder (``forward_encoder``).
        """
        if require_decoder and not self.has_decoder:
            raise ValueError(no_decoder_message(self.path))
        model = build_model(self.config)
        model.load_state_dict(self.weights, strict=self.has_decoder)
        return model.eval()

    def resized(self, img_size: tuple[int, int] | int) -> ImportedModel:
        """The same model for another input size: position embeddings resampled to the new grid."""
        config = dataclasses.replace(self.config, img_size=img_size)
        weights = dict(self.weights)
        for key in ("pos_embed", "decoder_pos_embed"):
            if key in weights:
                weights[key] = adapt_pos_embed(weights[key], self.config.grid_size, config.grid_size)
        info = self.data_info
        if info is not None:
            info = dataclasses.replace(info, img_size=config.img_size)
        return dataclasses.replace(self, config=config, weights=weights, data_info=info)


def no_decoder_message(path: Path) -> str:
    return (
        f"{path} holds the encoder only (like the official mae_pretrain_vit_*.pth releases): there is no "
        "decoder to reconstruct with. Use a file with the decoder: mae_visualize_vit_*.pth (raw pixels) or "
        "mae_pretrain_vit_*_full.pth (normalized pixels), or a maelab pre-training checkpoint"
    )


def check_weights(config: MAEConfig, weights: dict[str, torch.Tensor], has_decoder: bool, path: Path) -> None:
    """ValueError naming missing, unexpected and mis-shaped tensors, if ``weights`` do not fit ``config``."""
    problem = weights_mismatch(config, weights, with_decoder=has_decoder)
    if problem is not None:
        raise ValueError(
            f"{path}: the tensors do not fit the model ({problem}); the file is damaged or not an MAE checkpoint"
        )
