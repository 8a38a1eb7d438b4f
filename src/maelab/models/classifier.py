"""Classifiers on an MAE encoder: a stock timm ``VisionTransformer`` with a linear or
BatchNorm + linear head, and the raw-pixel baseline :class:`PixelProbe`.

The MAE encoder's keys are timm's, so its weights load strictly. Fine-tuning uses global
average pooling + ``fc_norm`` (timm then makes ``norm`` an Identity, so the pre-trained
``norm`` is dropped and ``fc_norm`` starts fresh, as in the paper's reference code);
probing and kNN use the cls token after the pre-trained final ``norm``.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from maelab.models.cnn import build_cnn

HEAD_TYPES = ("linear", "bn_linear", "none")

# The probe's BatchNorm epsilon (the paper's recipe); the timm export folds the BatchNorm with the same value.
PROBE_BN_EPS = 1e-6


def build_vit(cfg: dict, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm ViT from :func:`classifier_config`; "bn_linear" puts BatchNorm(affine=False) before the fc.
    ``layers`` > 1 (frozen-feature probes only) builds a :class:`LastBlocksViT`."""
    layers = cfg.get("layers", 1)
    model = (LastBlocksViT if layers > 1 else VisionTransformer)(
        img_size=tuple(cfg["img_size"]), patch_size=cfg["patch_size"], in_chans=cfg["in_chans"],
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
        qkv_bias=True, global_pool=cfg["global_pool"], fc_norm=cfg["fc_norm"], num_classes=cfg["num_classes"],
        drop_path_rate=drop_path_rate, **({"layers": layers} if layers > 1 else {}),
    )
    if cfg["head"] == "bn_linear":
        model.head = bn_linear_head(model.num_features, cfg["num_classes"])
    return model


class LastBlocksViT(VisionTransformer):
    """A timm ViT whose features concatenate the last ``layers`` blocks' outputs, each through the final norm and
    pooled like the model's (cls token or patch mean): masked-image-modeling features sit partly in intermediate
    blocks. Same parameters and keys as the ViT (only the head is wider): any timm ViT checkpoint loads."""

    def __init__(self, *, layers: int, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=0, **kwargs)
        if not 1 <= layers <= len(self.blocks):
            raise ValueError(f"--layers must be between 1 and the encoder's {len(self.blocks)} blocks; got {layers}")
        self.layers = layers
        self.num_features = self.embed_dim * layers
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, layers * D)."""
        blocks = self.forward_intermediates(imgs, indices=self.layers, return_prefix_tokens=True, norm=True,
                                            output_fmt="NLC", intermediates_only=True)  # [((B, L, D), (B, 1, D))]
        pooled = [prefix[:, 0] if self.global_pool == "token" else patches.mean(1) for patches, prefix in blocks]
        return torch.cat(pooled, dim=1)  # (B, layers * D)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(imgs))


def bn_linear_head(dim: int, num_classes: int) -> nn.Sequential:
    """The probe head: BatchNorm1d(affine=False) standardizes the features, then a linear layer."""
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=PROBE_BN_EPS), nn.Linear(dim, num_classes))


class PixelProbe(nn.Module):
    """The no-encoder baseline: normalized images (B, C, H, W) flattened to (B, C*H*W) features,
    then a BatchNorm + linear head (``head="bn_linear"``: logistic regression on standardized
    pixels) or none (the features themselves, for kNN)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        height, width = cfg["img_size"]
        self.num_features = cfg["in_chans"] * height * width
        self.head = (bn_linear_head(self.num_features, cfg["num_classes"]) if cfg["head"] == "bn_linear"
                     else nn.Identity())

    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        return imgs.flatten(1)  # (B, C*H*W)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(imgs))


def build_classifier(cfg: dict) -> nn.Module:
    """A :class:`PixelProbe`, a timm CNN (``finetune --arch``) or a timm ViT, from the ``model_config`` of a
    classifier checkpoint."""
    if cfg.get("kind") == "cnn":
        return build_cnn(cfg)
    return PixelProbe(cfg) if cfg.get("features") == "pixels" else build_vit(cfg)


def init_head(head: nn.Module, std: float) -> None:
    """Truncated-normal fc weights with a zero bias (the reference code's head init)."""
    fc = head[-1] if isinstance(head, nn.Sequential) else head
    nn.init.trunc_normal_(fc.weight, std=std)
    nn.init.zeros_(fc.bias)


class FrozenInEval(nn.Module):
    """Wraps a model so that ``train()`` leaves its frozen parts in eval mode (no drop path, fixed BN)."""

    def __init__(self, model: nn.Module, frozen: list[nn.Module]) -> None:
        super().__init__()
        self.model = model
        self._frozen = tuple(frozen)  # a tuple is not registered: these are submodules of ``model``

    def train(self, mode: bool = True) -> FrozenInEval:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
