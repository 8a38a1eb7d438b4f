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
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from tqdm.auto import tqdm

from maelab.data import DataConfig, DatasetInfo
from maelab.engine.classify import (
    INITS,
    PixelProbe,
    Pretrained,
    build_vit,
    classifier_config,
    labeled_info,
    load_encoder,
    load_pretrained,
    mae_meta,
    pixel_config,
    resolve_data,
)
from maelab.engine.eval_config import EvalDataOptions
from maelab.models import MAEConfig, build_model, get_config

logger = logging.getLogger(__name__)


def eval_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def fixed_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """The same ``limit`` random images on every call (all of them when ``limit`` is None or large)."""
    if limit is None or len(dataset) <= limit:
        return dataset
    if isinstance(dataset, IterableDataset):  # shards: written in random order, so their first images
        return dataset.configured(limit=limit)
    # Random rather than the first ones: datasets stored class by class would otherwise lose whole classes.
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:limit]
    return Subset(dataset, order.tolist())


@torch.no_grad()
def extract_features(
    features: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, batch_size: int, device: torch.device,
    desc: str = "features", num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) float32 on CPU and labels (N,) of a whole dataset, in order."""
    feats, labels = [], []
    loader = eval_loader(dataset, batch_size, device, num_workers)
    for imgs, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
        feats.append(features(imgs.to(device, non_blocking=True)).float().cpu())
        labels.append(torch.as_tensor(target))
    if not feats:
        raise ValueError(f"{desc}: the dataset is empty; check the dataset options")
    return torch.cat(feats), torch.cat(labels).long()


def vit_features(model: VisionTransformer) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) -> (B, D): the pooled, pre-logit features (cls token after norm, or the average)."""
    return lambda imgs: model.forward_head(model.forward_features(imgs), pre_logits=True)


def frozen_features_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, C, H, W) -> (B, D): a ViT's pre-logit features, or a PixelProbe's flattened pixels."""
    return model.features if isinstance(model, PixelProbe) else vit_features(model)


@dataclass(frozen=True)
class EncoderSource:
    """Where an evaluation's architecture and weights come from (``--init``, ``--checkpoint``, ``--model``)."""

    init: str
    checkpoint: Path | None
    config: MAEConfig | None
    """The encoder's architecture: the checkpoint's, else the ``--model`` preset's; None for pixels."""
    pretrained: Pretrained | None
    """The checkpoint's weights; loaded only for ``--init pretrained``."""
    saved_data: dict[str, Any]
    """The checkpoint's pre-training DataConfig (JSON form); empty without a checkpoint."""
    name: str
    """The checkpoint's model name, the preset, or "pixels"."""

    @property
    def fixed_channels(self) -> bool:
        """A checkpoint's architecture fixes the input channels; a bare preset (or pixels) does not."""
        return self.checkpoint is not None and self.init != "pixels"

    def provenance(self) -> dict[str, Any]:
        """What the features came from, for metrics.json / knn.json / checkpoint metadata."""
        return dict(init=self.init, source_checkpoint=str(self.checkpoint) if self.checkpoint is not None else None,
                    model=self.name if self.init != "pixels" else None)


def encoder_source(init: str, checkpoint: Path | None, model: str, command: str) -> EncoderSource:
    """Resolve ``--init`` / ``--checkpoint`` / ``--model``.

    ``pretrained`` needs a checkpoint and loads its encoder. ``none`` takes the architecture
    (and the data defaults) from the checkpoint when one is given, else from the ``model``
    preset, and never reads its weights. ``pixels`` has no architecture; a checkpoint only
    supplies the data defaults.
    """
    assert init in INITS, init
    if init == "pretrained":
        if checkpoint is None:
            others = "--init none to train from scratch" if command == "finetune" else (
                "--init none (random encoder of --model) or --init pixels (raw pixels) for a baseline")
            raise ValueError(f"{command} needs --checkpoint (a maelab pre-training run), or {others}")
        pre = load_pretrained(checkpoint, command)
        return EncoderSource(init, Path(checkpoint), pre.config, pre, pre.data, pre.name)
    if checkpoint is None:
        config = get_config(model) if init == "none" else None
        return EncoderSource(init, None, config, None, {}, model if init == "none" else "pixels")
    from maelab.interop.load import load_source, source_kind

    if source_kind(checkpoint) == "maelab":
        meta = mae_meta(checkpoint, command)
        config, data = MAEConfig.from_dict(meta.model_config), dict(meta.extra.get("data") or {})
        name = str(meta.extra.get("model_name", "mae"))
    elif init == "none":  # an official .pth or a Hugging Face directory: its architecture, no data provenance
        imported = load_source(checkpoint)
        config, data, name = imported.config, {}, imported.name
    elif not Path(checkpoint).exists():
        raise ValueError(f"--checkpoint {checkpoint} does not exist")
    else:  # pixels from a foreign checkpoint: it has no data defaults, so its weights are not read
        config, data, name = None, {}, "pixels"
    if init == "pixels":
        config, name = None, "pixels"
    return EncoderSource(init, Path(checkpoint), config, None, data, name)


def random_encoder(config: MAEConfig, seed: int) -> Pretrained:
    """The encoder of ``build_model(config)`` built right after ``torch.manual_seed(seed)``
    (for a preset, exactly ``create_model(name)``'s), leaving the global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mae = build_model(config)
    return Pretrained(Path(f"<random init, seed {seed}>"), config, mae.encoder_state_dict(), {}, "random")


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


def frozen_features(
    init: str, checkpoint: Path | None, model: str, opts: EvalDataOptions, pool: str, head: str, seed: int,
    device: torch.device, command: str,
) -> FrozenFeatures:
    """The one path from ``--init`` to features, shared by linprobe and knn.

    ``pretrained``: the checkpoint's encoder. ``none``: a random encoder of the same architecture
    (:func:`random_encoder` with ``seed``). ``pixels``: no encoder; the eval-transformed images at
    the data's native size (or ``--img-size``) flattened. ``head`` ("bn_linear" or "none") is
    left as built (callers initialize it); the global RNG is seeded with ``seed`` before it is.
    """
    source = encoder_source(init, checkpoint, model, command)
    data = resolve_data(opts, source.saved_data, source.config, fixed_channels=source.fixed_channels)
    info = labeled_info(data)
    torch.manual_seed(seed)
    provenance = source.provenance()
    if init == "pixels":
        cfg = pixel_config(info, head)
        net: nn.Module = PixelProbe(cfg)
        name = "pixels"
    else:
        cfg = classifier_config(source.config, data, info.num_classes, global_pool=pool, head=head)
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
    return FrozenFeatures(net, cfg, frozen_features_fn(net), int(net.num_features), data, info, name, provenance)
