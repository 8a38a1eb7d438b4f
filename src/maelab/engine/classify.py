"""Classifiers on a pre-trained MAE encoder: loading, building, resolution change, checkpoints.

Every evaluation model is a stock timm ``VisionTransformer`` (or, for the ``--init pixels``
baseline, a :class:`PixelProbe` with no encoder); the MAE encoder's keys are timm's, so its
weights load strictly. Fine-tuning uses global average pooling + ``fc_norm``
(timm then makes ``norm`` an Identity, so the pre-trained ``norm`` is dropped and ``fc_norm``
starts fresh, as in the paper's reference code); probing and kNN use the cls token after
the pre-trained final ``norm``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from maelab.data import DataConfig, DatasetInfo, dataset_info
from maelab.engine.checkpoint import CheckpointMeta, load_checkpoint, read_meta
from maelab.engine.config import to_jsonable
from maelab.engine.eval_config import EvalDataOptions
from maelab.models import MAEConfig
from maelab.pos_embed import adapt_pos_embed

logger = logging.getLogger(__name__)

HEAD_TYPES = ("linear", "bn_linear", "none")
INITS = ("pretrained", "none", "pixels")
"""What an evaluation's features come from: the checkpoint's encoder, a randomly initialized
encoder of the same (or a preset's) architecture, or the raw normalized pixels (no encoder)."""


@dataclass(frozen=True)
class Pretrained:
    """A pre-training checkpoint's encoder (timm keys), architecture and data provenance."""

    path: Path
    config: MAEConfig
    encoder: dict[str, torch.Tensor]
    data: dict[str, Any]
    """The DataConfig it was pre-trained with (JSON form); empty when not recorded."""
    name: str


def mae_meta(path: Path, command: str) -> CheckpointMeta:
    meta = read_meta(path)
    if meta.kind != "mae":
        raise ValueError(
            f"{path} is a {meta.kind!r} checkpoint; {command} needs a pre-training ('mae') checkpoint "
            "written by `maelab pretrain` (its run directory or checkpoint-last.safetensors)"
        )
    return meta


def load_pretrained(path: Path, command: str) -> Pretrained:
    """The encoder of a maelab pre-training checkpoint (or run directory), an official MAE release
    (``mae_pretrain_vit_*.pth`` and the others) or a Hugging Face ViT-MAE / ViT directory, with its
    tensors checked against the architecture it describes."""
    from maelab.interop.load import load_source, source_kind

    if source_kind(path) == "maelab":
        mae_meta(path, command)  # a classifier checkpoint gets a message that names this command
    imported = load_source(path)
    return Pretrained(Path(path), imported.config, imported.encoder_weights(), dict(imported.data), imported.name)


def resolve_data(
    opts: EvalDataOptions, saved: dict[str, Any], model: MAEConfig | None, fixed_channels: bool,
) -> DataConfig:
    """The data to evaluate on: explicit options, else the pre-training data, at the model's geometry.

    ``fixed_channels``: the weights fix the input channels (any pre-trained encoder), so
    ``--channels`` may only repeat them. ``model`` None (raw pixels): the data's native size
    and channels unless ``--img-size`` / ``--channels`` say otherwise.
    """
    dataset = opts.dataset or saved.get("dataset") or "fashion_mnist"
    same = dataset == saved.get("dataset")
    data = opts.data if opts.data is not None else (Path(saved["data"]) if same and saved.get("data") else None)
    synthetic = opts.synthetic_size or (saved.get("synthetic_size") if same else None) or 512
    if model is None:
        return DataConfig(dataset=dataset, data=data, download=opts.download, img_size=opts.img_size,
                          channels=opts.channels, synthetic_size=synthetic, num_workers=opts.num_workers)
    height, width = model.img_size
    if opts.img_size is None and height != width:
        raise ValueError(f"the checkpoint's images are {height}x{width}; pass a square --img-size to evaluate it")
    size = opts.img_size or height
    if size % model.patch_size:
        raise ValueError(f"--img-size {size} is not a multiple of the patch size {model.patch_size}; pick one that is")
    channels = model.in_chans
    if opts.channels is not None and opts.channels != model.in_chans:
        if fixed_channels:
            raise ValueError(
                f"--channels {opts.channels} does not fit the checkpoint, whose patch embedding takes "
                f"{model.in_chans}-channel images; omit --channels (the data is converted to {model.in_chans})"
            )
        channels = opts.channels
    return DataConfig(dataset=dataset, data=data, download=opts.download, img_size=size, channels=channels,
                      synthetic_size=synthetic, num_workers=opts.num_workers)


def labeled_info(data: DataConfig) -> DatasetInfo:
    info = dataset_info(data)
    if info.num_classes < 2:
        raise ValueError(f"{data.dataset} has {info.num_classes} classes; classification needs a labeled dataset")
    return info


def classifier_config(model: MAEConfig, data: DataConfig, num_classes: int, global_pool: str, head: str) -> dict:
    """The JSON-able architecture of a classifier (stored in its checkpoint's metadata)."""
    assert head in HEAD_TYPES, head
    return dict(
        img_size=[data.img_size, data.img_size], patch_size=model.patch_size, in_chans=data.channels,
        embed_dim=model.embed_dim, depth=model.depth, num_heads=model.num_heads, mlp_ratio=model.mlp_ratio,
        global_pool=global_pool, fc_norm=global_pool == "avg" and head == "linear",
        num_classes=num_classes if head != "none" else 0, head=head,
    )


def build_vit(cfg: dict, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm ViT from :func:`classifier_config`; "bn_linear" puts BatchNorm(affine=False) before the fc."""
    model = VisionTransformer(
        img_size=tuple(cfg["img_size"]), patch_size=cfg["patch_size"], in_chans=cfg["in_chans"],
        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
        qkv_bias=True, global_pool=cfg["global_pool"], fc_norm=cfg["fc_norm"], num_classes=cfg["num_classes"],
        drop_path_rate=drop_path_rate,
    )
    if cfg["head"] == "bn_linear":
        model.head = bn_linear_head(cfg["embed_dim"], cfg["num_classes"])
    return model


# The probe's BatchNorm epsilon (the paper's recipe); the timm export folds the BatchNorm with the same value.
PROBE_BN_EPS = 1e-6


def bn_linear_head(dim: int, num_classes: int) -> nn.Sequential:
    """The probe head: BatchNorm1d(affine=False) standardizes the features, then a linear layer."""
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=PROBE_BN_EPS), nn.Linear(dim, num_classes))


def pixel_config(info: DatasetInfo, head: str) -> dict:
    """The JSON-able architecture of a :class:`PixelProbe` (stored in its checkpoint's metadata)."""
    assert head in ("bn_linear", "none"), head
    return dict(features="pixels", img_size=list(info.img_size), in_chans=info.channels,
                num_classes=info.num_classes if head != "none" else 0, head=head)


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
    """A :class:`PixelProbe` or a timm ViT, from the ``model_config`` of a classifier checkpoint."""
    return PixelProbe(cfg) if cfg.get("features") == "pixels" else build_vit(cfg)


def init_head(head: nn.Module, std: float) -> None:
    """Truncated-normal fc weights with a zero bias (the reference code's head init)."""
    fc = head[-1] if isinstance(head, nn.Sequential) else head
    nn.init.trunc_normal_(fc.weight, std=std)
    nn.init.zeros_(fc.bias)


def load_encoder(model: VisionTransformer, pretrained: Pretrained) -> None:
    """Copy the pre-trained encoder into ``model``; only the head and a fresh fc_norm may stay unset."""
    state = dict(pretrained.encoder)
    new_grid = tuple(model.patch_embed.grid_size)
    if new_grid != pretrained.config.grid_size:
        logger.info("position embedding: %s grid -> %s grid", pretrained.config.grid_size, new_grid)
        state["pos_embed"] = adapt_pos_embed(state["pos_embed"], pretrained.config.grid_size, new_grid)
    if isinstance(model.norm, nn.Identity):
        # Average pooling + fc_norm: timm normalizes after pooling, so the token-wise norm is gone.
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{pretrained.path} does not fit the classifier: {exc}") from exc
    missing = [k for k in result.missing_keys if not k.startswith(("head.", "fc_norm."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{pretrained.path} does not fit the classifier: missing {missing}, unexpected {result.unexpected_keys}"
        )


def classifier_meta(cfg: dict, info: DatasetInfo, data: DataConfig, epoch: int, extra: dict) -> CheckpointMeta:
    return CheckpointMeta(kind="classifier", model_config=cfg, data_info=to_jsonable(info), epoch=epoch,
                          extra={"num_classes": cfg["num_classes"], "data": to_jsonable(data), **extra})


def load_classifier(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a fine-tuned or probed classifier (kind "classifier") in eval mode: a timm ViT,
    or a :class:`PixelProbe` for a ``linprobe --init pixels`` checkpoint."""
    weights, meta = load_checkpoint(path, device)
    if meta.kind != "classifier":
        raise ValueError(f"{path} is a {meta.kind!r} checkpoint, not a classifier from finetune/linprobe")
    model = build_classifier(meta.model_config).to(device)
    model.load_state_dict(weights)
    return model.eval(), meta


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
