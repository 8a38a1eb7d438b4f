"""Classifier checkpoints of finetune and linprobe: their architecture record, metadata and loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from maelab.checkpoint import CheckpointMeta, load_checkpoint
from maelab.data import DataConfig, DatasetInfo
from maelab.models import MAEConfig
from maelab.models.classifier import HEAD_TYPES, build_classifier
from maelab.train.config import to_jsonable


def classifier_config(model: MAEConfig, data: DataConfig, num_classes: int, global_pool: str, head: str,
                      layers: int = 1) -> dict:
    """The JSON-able architecture of a classifier (stored in its checkpoint's metadata); ``layers`` > 1:
    features from the last ``layers`` blocks (:class:`~maelab.models.classifier.LastBlocksViT`)."""
    assert head in HEAD_TYPES, head
    if not 1 <= layers <= model.depth:
        raise ValueError(f"--layers must be between 1 and the encoder's {model.depth} blocks; got {layers}")
    return dict(
        img_size=[data.img_size, data.img_size], patch_size=model.patch_size, in_chans=data.channels,
        embed_dim=model.embed_dim, depth=model.depth, num_heads=model.num_heads, mlp_ratio=model.mlp_ratio,
        global_pool=global_pool, fc_norm=global_pool == "avg" and head == "linear",
        num_classes=num_classes if head != "none" else 0, head=head, **({"layers": layers} if layers > 1 else {}),
    )


def pixel_config(info: DatasetInfo, head: str) -> dict:
    """The JSON-able architecture of a :class:`PixelProbe` (stored in its checkpoint's metadata)."""
    assert head in ("bn_linear", "none"), head
    return dict(features="pixels", img_size=list(info.img_size), in_chans=info.channels,
                num_classes=info.num_classes if head != "none" else 0, head=head)


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
