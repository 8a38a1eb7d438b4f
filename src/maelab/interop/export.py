"""``maelab export``: a checkpoint to timm, Hugging Face, ONNX or plain safetensors."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from safetensors.torch import save_file

from maelab.interop.imported import ImportedModel
from maelab.interop.load import load_source
from maelab.models.mae import MAEConfig

logger = logging.getLogger(__name__)

FORMATS = ("timm", "hf", "onnx", "safetensors")
_SUFFIX = {"timm": "-timm.safetensors", "hf": "-hf", "onnx": "-encoder.onnx", "safetensors": "-weights.safetensors"}
# timm's architectures with the same shapes as maelab's presets (at 224x224).
_TIMM_NAMES = {(768, 12, 12, 16): "vit_base_patch16", (1024, 24, 16, 16): "vit_large_patch16",
               (1280, 32, 16, 14): "vit_huge_patch14"}


@dataclass(frozen=True)
class ExportConfig:
    """What to export, where, and in which format."""

    checkpoint: Path
    """A maelab checkpoint or run directory, an official MAE .pth, or a Hugging Face directory."""
    to: Literal["timm", "hf", "onnx", "safetensors"]
    output: Path | None = None
    """Output file (directory for hf); default: beside the checkpoint, named after it and the format."""
    encoder_only: bool = False
    """hf / safetensors: write the encoder alone (timm and onnx always do)."""
    target: Literal["pixel", "norm_pixel"] | None = None
    """For an official .pth whose name does not say what its decoder predicts."""
    img_size: int | None = None
    """Export for this input size: the position embeddings are resampled to the new patch grid."""


def timm_kwargs(c: MAEConfig) -> dict:
    """``timm.create_model`` keyword arguments that give this encoder's architecture (no head)."""
    return dict(img_size=list(c.img_size), patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim,
                depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, num_classes=0)


def timm_name(c: MAEConfig) -> str:
    """timm's MAE architecture of the same shapes (its ``.mae`` tag has no head), else ViT-B's, which
    :func:`timm_kwargs` then overrides."""
    base = _TIMM_NAMES.get((c.embed_dim, c.depth, c.num_heads, c.patch_size), "vit_base_patch16")
    return f"{base}_224.mae"


def export_timm(imported: ImportedModel, output: Path) -> Path:
    """The encoder as a timm ``VisionTransformer`` state dict (safetensors, no head)."""
    kwargs = timm_kwargs(imported.config)
    _save(imported.encoder_weights(), output, {"timm_architecture": timm_name(imported.config),
                                               "timm_kwargs": json.dumps(kwargs)})
    logger.info("load it with timm.create_model(%r, pretrained=True, pretrained_cfg_overlay=dict(file=%r), **%s)",
                timm_name(imported.config), str(output), kwargs)
    return output


def export_safetensors(imported: ImportedModel, output: Path, encoder_only: bool) -> Path:
    """Plain weights under maelab keys, with the architecture as JSON metadata."""
    weights = imported.encoder_weights() if encoder_only else imported.weights
    _save(weights, output, {"model_config": json.dumps(imported.config.to_dict()),
                            "contents": "encoder" if encoder_only or not imported.has_decoder else "full"})
    return output


def _save(weights: dict, output: Path, metadata: dict[str, str]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(output), metadata=metadata)


def default_output(checkpoint: Path, to: str) -> Path:
    checkpoint = Path(checkpoint)
    stem = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
    return checkpoint.parent / f"{stem}{_SUFFIX[to]}"


def run_export(cfg: ExportConfig) -> Path:
    """Read ``cfg.checkpoint`` and write it in ``cfg.to``'s format; returns the output path."""
    output = Path(cfg.output) if cfg.output is not None else default_output(cfg.checkpoint, cfg.to)
    if output.exists():
        raise ValueError(f"{output} already exists; choose another --output (exports never overwrite)")
    imported = load_source(cfg.checkpoint, cfg.target, cfg.img_size)
    if cfg.to == "timm":
        export_timm(imported, output)
    elif cfg.to == "safetensors":
        export_safetensors(imported, output, cfg.encoder_only)
    elif cfg.to == "hf":
        from maelab.interop.hf import save_hf

        save_hf(imported, output, cfg.encoder_only)
    elif cfg.to == "onnx":
        from maelab.interop.onnx import export_onnx

        export_onnx(imported, output)
    else:
        raise ValueError(f"--to must be one of {', '.join(FORMATS)}; got {cfg.to!r}")
    encoder_only = cfg.to in ("timm", "onnx") or cfg.encoder_only or not imported.has_decoder
    what = "encoder" if encoder_only else "encoder + decoder"
    logger.info("wrote %s (%s, %s; predicts %s: %s)", output, cfg.to, what, imported.config.target,
                imported.target_source)
    return output
