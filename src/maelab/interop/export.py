"""``maelab export``: a checkpoint to timm, Hugging Face, ONNX or plain safetensors."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro
from safetensors.torch import save_file

from maelab.checkpoint import load_checkpoint, read_meta
from maelab.interop.imported import ImportedModel
from maelab.interop.load import load_source, source_kind
from maelab.models.classifier import PROBE_BN_EPS
from maelab.models.config import MAEConfig

logger = logging.getLogger(__name__)

FORMATS = ("timm", "hf", "onnx", "safetensors")
_SUFFIX = {"timm": "-timm.safetensors", "hf": "-hf", "onnx": "-encoder.onnx", "safetensors": "-weights.safetensors"}
# timm's architectures with the same shapes as maelab's presets (at 224x224).
_TIMM_NAMES = {(768, 12, 12, 16): "vit_base_patch16", (1024, 24, 16, 16): "vit_large_patch16",
               (1280, 32, 16, 14): "vit_huge_patch14"}
# A classifier checkpoint's architecture entries that are also timm VisionTransformer arguments.
_CLASSIFIER_TIMM_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                         "num_classes", "global_pool", "fc_norm")


@dataclass(frozen=True)
class ExportConfig:
    """What to export, where, and in which format."""

    checkpoint: tyro.conf.Positional[Path]
    """A maelab checkpoint or run directory, an official MAE .pth, or a Hugging Face directory."""
    to: Literal["timm", "hf", "onnx", "safetensors"]
    output: Annotated[Path | None, tyro.conf.arg(aliases=("-o",))] = None
    """Output file (directory for hf); default: beside the checkpoint, named after it and the format. A timm or
    safetensors file's name gets .safetensors appended when it lacks it (timm reads by the extension)."""
    encoder_only: bool = False
    """hf / safetensors: write the encoder alone (timm and onnx always do)."""
    target: Literal["pixel", "norm_pixel"] | None = None
    """For an official .pth whose name does not say what its decoder predicts."""
    img_size: int | None = None
    """Export for this input size: the position embeddings are resampled to the new patch grid."""
    head_classes: int = 1000
    """timm, pre-training checkpoints: also write a zero-initialized (untrained) classifier head with this
    many outputs. timm's ImageNet names (vit_base_patch16_224, ...) expect a 1000-class head and then load
    the file with no other argument; 0 writes none, for the ``.mae`` tags (vit_base_patch16_224.mae).
    Fine-tuned and probed checkpoints always carry their own trained head."""

    def __post_init__(self) -> None:
        check_head_classes(self.head_classes)  # before the checkpoint is read


def check_head_classes(head_classes: int) -> None:
    if head_classes < 0:
        raise ValueError(f"--head-classes must be 0 (no head) or a class count; got {head_classes}")


def timm_kwargs(c: MAEConfig) -> dict:
    """``timm.create_model`` keyword arguments that give this encoder's architecture (no head)."""
    return dict(img_size=list(c.img_size), patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim,
                depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, num_classes=0)


def timm_name(c: MAEConfig, head: bool = True) -> str:
    """timm's ViT of the same shapes, else ViT-B's, which :func:`timm_kwargs` then overrides. With
    ``head=False`` its ``.mae`` tag, whose pretrained config has no classifier."""
    base = _TIMM_NAMES.get((c.embed_dim, c.depth, c.num_heads, c.patch_size), "vit_base_patch16")
    return f"{base}_224" if head else f"{base}_224.mae"


def export_timm(imported: ImportedModel, output: Path, head_classes: int = 1000) -> Path:
    """The encoder as a timm ``VisionTransformer`` state dict (safetensors), with a zero-initialized
    ``head_classes``-way head unless it is 0 (a 1000-way head lets timm's untagged ImageNet names load it)."""
    check_head_classes(head_classes)
    weights = imported.encoder_weights()
    if head_classes:
        dim = imported.config.embed_dim
        weights = {**weights, "head.weight": torch.zeros(head_classes, dim), "head.bias": torch.zeros(head_classes)}
    name = timm_name(imported.config, head=head_classes > 0)
    kwargs = timm_kwargs(imported.config)
    head = f"zero-initialized {head_classes}-way head (untrained)" if head_classes else "none"
    _save(weights, output, {"timm_architecture": name, "timm_kwargs": json.dumps(kwargs), "head": head})
    logger.info("load it with timm.create_model(%r, pretrained=True, pretrained_cfg_overlay=dict(file=%r)%s)",
                name, str(output), "" if _is_stock(imported.config) else f", **{kwargs}")
    return output


def _is_stock(c: MAEConfig) -> bool:
    """The encoder is exactly timm's architecture of :func:`timm_name` at 224x224 with 3 channels."""
    return ((c.embed_dim, c.depth, c.num_heads, c.patch_size) in _TIMM_NAMES and tuple(c.img_size) == (224, 224)
            and c.in_chans == 3 and c.mlp_ratio == 4.0)


def export_timm_classifier(path: Path, output: Path) -> Path:
    """A fine-tuned or probed maelab classifier as a timm ``VisionTransformer`` state dict, its trained head
    included. The probe's BatchNorm (no affine, running statistics) is folded into its linear layer, which
    is exact in eval mode: W (x - mu) / s + b = (W / s) x + (b - (W / s) mu)."""
    weights, meta = load_checkpoint(path)
    cfg = meta.model_config
    if cfg.get("kind") == "cnn":
        return export_timm_cnn(weights, cfg, output)
    if cfg.get("features") == "pixels" or cfg.get("head") not in ("linear", "bn_linear"):
        raise ValueError(f"{path} is a raw-pixel or headless probe; only ViT classifiers export to timm")
    if cfg.get("layers", 1) > 1:
        raise ValueError(f"{path} probes the last {cfg['layers']} blocks together (--layers), which a timm "
                         "VisionTransformer cannot express; export a probe with --layers 1, or the pre-training "
                         "checkpoint")
    if cfg["head"] == "bn_linear":
        weights = fold_bn_linear(weights, eps=PROBE_BN_EPS)
    kwargs = {key: cfg[key] for key in _CLASSIFIER_TIMM_KEYS} | {"img_size": list(cfg["img_size"])}
    info = meta.data_info or {}
    # timm drops a file's head unless the overlay's class count equals the model's: the overlay names it.
    overlay = {"num_classes": cfg["num_classes"]}
    if info.get("mean") is not None:
        overlay.update(mean=tuple(info["mean"]), std=tuple(info["std"]))
    _save(weights, output, {"timm_architecture": "vit_base_patch16_224", "timm_kwargs": json.dumps(kwargs),
                            "pretrained_cfg_overlay": json.dumps(overlay),
                            "class_names": json.dumps(list(info.get("class_names") or []))})
    logger.info("load it with timm.create_model('vit_base_patch16_224', pretrained=True, "
                "pretrained_cfg_overlay=dict(file=%r, **%s), **%s); inputs normalized with mean/std %s/%s",
                str(output), overlay, kwargs, info.get("mean"), info.get("std"))
    return output


def export_timm_cnn(weights: dict[str, torch.Tensor], cfg: dict, output: Path) -> Path:
    """A ``finetune --arch`` network: timm's own state dict; the metadata says how to rebuild it (with the
    small-image stem where the checkpoint has one, which a stock timm model lacks)."""
    kwargs = dict(in_chans=cfg["in_chans"], num_classes=cfg["num_classes"])
    _save(weights, output, {"timm_architecture": cfg["arch"], "timm_kwargs": json.dumps(kwargs),
                            "small_input_stem": json.dumps(cfg["small_input_stem"])})
    stem = (" then, before loading, model.conv1 = torch.nn.Conv2d(%d, model.conv1.out_channels, 3, 1, 1, bias=False) "
            "(the small-image stem; maelab.models.cnn.build_cnn does both)" % cfg["in_chans"]
            if cfg["small_input_stem"] else "")
    logger.info("load it with model = timm.create_model(%r, **%s);%s model.load_state_dict("
                "safetensors.torch.load_file(%r))", cfg["arch"], kwargs, stem, str(output))
    return output


def fold_bn_linear(weights: dict[str, torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """``head.0`` BatchNorm1d(affine=False) + ``head.1`` Linear -> one ``head`` Linear (same eval output)."""
    inv_std = (weights["head.0.running_var"].double() + eps).rsqrt()  # (D,)
    w = weights["head.1.weight"].double() * inv_std  # (K, D)
    b = weights["head.1.bias"].double() - w @ weights["head.0.running_mean"].double()  # (K,)
    out = {k: v for k, v in weights.items() if not k.startswith("head.")}
    return {**out, "head.weight": w.float(), "head.bias": b.float()}


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


def output_path(output: Path | None, checkpoint: Path, to: str) -> Path:
    """Where the export goes: ``--output`` (a safetensors file's name ending in .safetensors: timm chooses its
    reader by the extension and refuses any other name as a pickle), else :func:`default_output`."""
    if output is None:
        return default_output(checkpoint, to)
    output = Path(output)
    if to in ("timm", "safetensors") and output.suffix != ".safetensors":
        output = output.with_name(output.name + ".safetensors")
        logger.info("writing %s: a safetensors file needs the extension for timm to read it", output)
    return output


def run_export(cfg: ExportConfig) -> Path:
    """Read ``cfg.checkpoint`` and write it in ``cfg.to``'s format; returns the output path."""
    output = output_path(cfg.output, cfg.checkpoint, cfg.to)
    if output.exists():
        raise ValueError(f"{output} already exists; choose another --output (exports never overwrite)")
    if source_kind(cfg.checkpoint) == "maelab" and read_meta(cfg.checkpoint).kind == "classifier":
        if cfg.to != "timm" or cfg.img_size is not None:
            raise ValueError(f"{cfg.checkpoint} is a classifier (finetune/linprobe); it exports --to timm, at its "
                             "own resolution; export its pre-training checkpoint for the other formats")
        export_timm_classifier(Path(cfg.checkpoint), output)
        logger.info("wrote %s (timm classifier, trained head)", output)
        return output
    imported = load_source(cfg.checkpoint, cfg.target, cfg.img_size)
    if cfg.to == "timm":
        export_timm(imported, output, cfg.head_classes)
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
