"""Frozen features for probing and kNN: where the encoder comes from and how features are extracted.

``--init`` picks the source: a pre-trained checkpoint's encoder, a random-init encoder of the
same architecture, or no encoder at all (flattened pixels, the raw-pixel floor).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from maelab.data import DataConfig, DatasetInfo, dataset_info
from maelab.evaluate.classifier import classifier_config, pixel_config
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.data import eval_loader, labeled_info, resolve_data
from maelab.evaluate.source import encoder_source, load_encoder, random_encoder
from maelab.models.classifier import LastBlocksViT, PixelProbe, build_vit
from maelab.options import resolved_layers

logger = logging.getLogger(__name__)


ImageFn = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, H, W) images on the device -> (B, ...) per-image outputs (features, patch errors)."""


@torch.no_grad()
def apply_to_images(
    fns: dict[str, ImageFn], dataset: Dataset, batch_size: int, device: torch.device, desc: str = "features",
    num_workers: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The one pass of frozen models over a dataset: each of ``fns`` on every batch, in order.

    Returns ({name: (N, ...) float32 on the CPU}, labels (N,)); every batch is read once, whatever the number
    of ``fns`` (embed, knn and linprobe take features, anomaly patch errors and features together)."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in fns}
    labels = []
    loader = eval_loader(dataset, batch_size, device, num_workers)
    for imgs, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
        imgs = imgs.to(device, non_blocking=True)
        for name, fn in fns.items():
            outputs[name].append(fn(imgs).float().cpu())
        labels.append(torch.as_tensor(target))
    if not labels:
        raise ValueError(f"{desc}: the dataset is empty; check the dataset options")
    return {name: torch.cat(parts) for name, parts in outputs.items()}, torch.cat(labels).long()


def extract_features(
    features: ImageFn, dataset: Dataset, batch_size: int, device: torch.device, desc: str = "features",
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) float32 on CPU and labels (N,) of a whole dataset, in order."""
    outputs, labels = apply_to_images({"features": features}, dataset, batch_size, device, desc, num_workers)
    return outputs["features"], labels


def vit_features(model: VisionTransformer) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) -> (B, D): the pooled, pre-logit features (cls token after norm, or the average)."""
    return lambda imgs: model.forward_head(model.forward_features(imgs), pre_logits=True)


def frozen_features_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) -> (B, D): a ViT's pre-logit features, or a PixelProbe's / LastBlocksViT's own."""
    return model.features if isinstance(model, (PixelProbe, LastBlocksViT)) else vit_features(model)


@dataclass(frozen=True)
class FrozenFeatures:
    """A frozen feature extractor (for probing and kNN) and the data it runs on."""

    model: nn.Module
    """Frozen, in eval mode, on the device: a timm ViT or a PixelProbe; only ``model.head`` trains."""
    model_config: dict
    """Its architecture, for checkpoint metadata (:func:`build_classifier` rebuilds it)."""
    encode: Callable[[torch.Tensor], torch.Tensor]
    """(B, C, H, W) -> (B, dim)."""
    dim: int
    data: DataConfig
    info: DatasetInfo
    name: str
    """Run-name stem: the checkpoint's model name, "<model>-random" or "pixels"."""
    provenance: dict[str, Any]
    layers: int
    """How many of the last blocks the features concatenate (``--layers`` resolved; 1 for pixels)."""


def frozen_features(
    init: str, checkpoint: Path | None, model: str, opts: EvalDataOptions, pool: str, head: str, seed: int,
    device: torch.device, command: str, layers: int | None = 1, labeled: bool = True,
) -> FrozenFeatures:
    """The one path from ``--init`` to features, shared by linprobe and knn.

    ``pretrained``: the checkpoint's encoder. ``none``: a random encoder of the same architecture
    (:func:`random_encoder` with ``seed``). ``pixels``: no encoder; the eval-transformed images at
    the data's native size (or ``--img-size``) flattened. ``head`` ("bn_linear" or "none") is
    left as built (callers initialize it); the global RNG is seeded with ``seed`` before it is.
    ``labeled`` False accepts unlabeled data (``maelab embed``, ``maelab anomaly``): no classes needed.
    ``layers`` None reads every block of the encoder (:func:`maelab.options.resolved_layers`).
    """
    if init == "pixels" and layers is not None and layers > 1:
        raise ValueError("--init pixels has no encoder blocks to take --layers from; drop --layers")
    source = encoder_source(init, checkpoint, model, command)
    # Pixels are read as one "block", the image itself.
    layers = 1 if init == "pixels" else resolved_layers(layers, source.config.depth)
    data = resolve_data(opts, source.saved_data, source.config, fixed_channels=source.fixed_channels)
    info = labeled_info(data) if labeled else dataset_info(data)
    torch.manual_seed(seed)
    provenance = source.provenance()
    if init == "pixels":
        cfg = pixel_config(info, head)
        net: nn.Module = PixelProbe(cfg)
        name = "pixels"
    else:
        cfg = classifier_config(source.config, data, info.num_classes, global_pool=pool, head=head, layers=layers)
        net = build_vit(cfg)
        if init == "pretrained":
            load_encoder(net, source.pretrained)
            name = source.name
        else:
            # The random encoder takes the data's channels when no checkpoint fixes them.
            arch = source.config if source.config.in_chans == data.channels else dataclasses.replace(
                source.config, in_chans=data.channels)
            load_encoder(net, random_encoder(arch, seed))
            name, provenance["init_seed"] = f"{source.name}-random", seed
    net.requires_grad_(False)
    net.head.requires_grad_(True)
    net.to(device).eval()
    return FrozenFeatures(net, cfg, frozen_features_fn(net), int(net.num_features), data, info, name, provenance,
                          layers)
