"""Where an evaluation's encoder comes from: ``--init``, ``--checkpoint`` and ``--model``.

``--init pretrained`` loads a checkpoint's encoder, ``none`` a random-init encoder of the same
architecture, ``pixels`` no encoder at all (flattened pixels, the raw-pixel floor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from maelab.checkpoint import CheckpointMeta, read_meta
from maelab.interop.load import NotPretraining, load_source, source_kind
from maelab.models import MAEConfig, build_model, get_config
from maelab.pos_embed import adapt_pos_embed

logger = logging.getLogger(__name__)

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
    """The metadata of a maelab pre-training checkpoint (its weights are not read)."""
    meta = read_meta(path)
    if meta.kind != "mae":
        raise NotPretraining(path, meta.kind).for_command(command)
    return meta


def load_pretrained(path: Path, command: str) -> Pretrained:
    """The encoder of a maelab pre-training checkpoint (or run directory), an official MAE release
    (``mae_pretrain_vit_*.pth`` and the others) or a Hugging Face ViT-MAE / ViT directory, with its
    tensors checked against the architecture it describes: one read of the source."""
    try:
        imported = load_source(path)
    except NotPretraining as exc:
        raise exc.for_command(command) from None
    return Pretrained(Path(path), imported.config, imported.encoder_weights(), dict(imported.data), imported.name)


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
