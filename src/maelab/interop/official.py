"""The official MAE releases (the reference code's ``.pth`` files) read safely into maelab.

Three kinds share one key layout, which is maelab's own (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.N.*``, ``norm``, then ``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_blocks.N.*``, ``decoder_norm``, ``decoder_pred``):

* ``mae_pretrain_vit_{base,large,huge}.pth``: the encoder only (decoder keys absent);
* ``mae_pretrain_vit_*_full.pth``: encoder and decoder, trained on normalized pixels;
* ``mae_visualize_vit_*.pth``: encoder and decoder, trained on raw pixels.

The key sets cannot tell the last two apart, so the target comes from, in order: the caller,
the ``args.norm_pix_loss`` a training run saves beside the weights, or the release's file name.
Files are read with ``torch.load(weights_only=True)`` (``argparse.Namespace`` allowed for
``args``): pickled code is never run.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from maelab.interop.imported import ImportedModel, imagenet_info
from maelab.models.config import MAEConfig
from maelab.models.registry import get_config, list_models

_ENCODER_KEYS = ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "norm.weight")
_DECODER_DEFAULT_HEADS = 16
"""The reference code's decoder always has 16 heads."""


def read_pth(path: Path) -> dict:
    """``torch.load`` with ``weights_only=True``; a file needing anything else is refused."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" not in text:
            raise ValueError(f"{path} is not a readable PyTorch file ({_unpickler_reason(text)})") from exc
        raise ValueError(
            f"{path} needs more than tensors and plain containers to load ({_unpickler_reason(text)}); maelab "
            "reads .pth files with torch.load(weights_only=True) only and never runs pickled code"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable PyTorch file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _unpickler_reason(text: str) -> str:
    """The line of torch's long weights-only message that names the problem."""
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line and line.split("WeightsUnpickler error:")[1].strip():
            return line.split("WeightsUnpickler error:")[1].strip().split(". ")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")]
    return lines[0] if lines else text.splitlines()[0]


def read_official(
    path: Path, target: str | None = None, num_heads: int | None = None, decoder_num_heads: int | None = None
) -> ImportedModel:
    """Read an official MAE release (or any checkpoint of the reference code) into maelab keys.

    Args:
        target: "pixel" or "norm_pixel" when the file cannot say (see the module docstring).
        num_heads, decoder_num_heads: attention heads, which shapes do not reveal; default: the
            matching maelab preset, else 64-wide heads (timm's ViTs) and 16 decoder heads.
    """
    path = Path(path)
    obj = read_pth(path)
    weights = obj.get("model", obj)
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{path} holds no state dict of tensors (expected the reference code's {{'model': ...}})")
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    missing = [k for k in _ENCODER_KEYS if k not in weights]
    if missing:
        raise ValueError(f"{path} is not an MAE / ViT checkpoint of the reference code: it lacks {missing}")
    if "head.weight" in weights or "fc_norm.weight" in weights:
        raise ValueError(
            f"{path} is a fine-tuned classifier (it has a head); import a pre-training checkpoint "
            "(mae_pretrain_vit_*.pth, *_full.pth or mae_visualize_vit_*.pth)"
        )
    has_decoder = "decoder_embed.weight" in weights
    args = obj.get("args")
    config, target_source = _infer_config(weights, has_decoder, path, target, args, num_heads, decoder_num_heads)
    if not has_decoder:
        # A preset's decoder fields stay in the config; nothing of the decoder is in the file.
        weights = {k: v for k, v in weights.items() if not k.startswith("decoder_") and k != "mask_token"}
    return ImportedModel(
        path=path, config=config, weights={k: v.float() for k, v in weights.items()}, has_decoder=has_decoder,
        origin="official", target_source=target_source,
        data_info=imagenet_info(config.img_size) if config.in_chans == 3 else None,
        name=path.stem,
    )


def official_target(path: Path, has_decoder: bool, args: object = None) -> tuple[str | None, str]:
    """What the decoder predicts, as far as the file tells, and why."""
    norm_pix = getattr(args, "norm_pix_loss", None) if not isinstance(args, dict) else args.get("norm_pix_loss")
    if isinstance(norm_pix, bool):
        return ("norm_pixel" if norm_pix else "pixel"), f"the file's args.norm_pix_loss={norm_pix}"
    name = path.name.lower()
    if "visualize" in name:
        return "pixel", "file name: the mae_visualize_* releases predict raw pixels"
    if re.search(r"_full\b|_full\.", name):
        return "norm_pixel", "file name: the *_full releases predict normalized pixels"
    if not has_decoder:
        return "norm_pixel", "encoder-only release (pre-trained on normalized pixels; there is no decoder)"
    return None, ""


def _infer_config(weights, has_decoder, path, target, args, num_heads, decoder_num_heads):
    proj = weights["patch_embed.proj.weight"]  # (D, C, p, p)
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ValueError(f"{path}: patch_embed.proj.weight has shape {tuple(proj.shape)}, not (D, C, p, p)")
    embed_dim, in_chans, patch, _ = proj.shape
    side = round((weights["pos_embed"].shape[1] - 1) ** 0.5)
    if side * side != weights["pos_embed"].shape[1] - 1:
        raise ValueError(f"{path}: pos_embed of shape {tuple(weights['pos_embed'].shape)} is not a square grid + cls")
    fields = dict(
        img_size=(side * patch, side * patch), patch_size=patch, in_chans=in_chans, embed_dim=embed_dim,
        depth=_count(weights, "blocks"), mlp_ratio=weights["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
    )
    if has_decoder:
        fields.update(decoder_embed_dim=weights["decoder_embed.weight"].shape[0],
                      decoder_depth=_count(weights, "decoder_blocks"))
    if target is None:
        target, target_source = official_target(path, has_decoder, args)
        if target is None:
            raise ValueError(
                f"cannot tell whether {path} predicts normalized or raw pixels (its name is neither "
                "mae_visualize_* nor *_full and it records no args); pass --target pixel or --target norm_pixel"
            )
    else:
        target_source = "given by the user"
    preset = _matching_preset(fields)
    heads = num_heads or (preset.num_heads if preset else _default_heads(embed_dim, 64, path))
    dec_heads = decoder_num_heads or (preset.decoder_num_heads if preset else _DECODER_DEFAULT_HEADS)
    try:
        base = preset or MAEConfig()
        config = MAEConfig(**{**base.to_dict(), **fields, "num_heads": heads, "decoder_num_heads": dec_heads,
                              "target": target, "encoder_mask_tokens": False})
    except ValueError as exc:
        raise ValueError(f"{path}: cannot build a model for these weights ({exc})") from exc
    return config, target_source


def _count(weights: dict, prefix: str) -> int:
    return len({k.split(".")[1] for k in weights if k.startswith(prefix + ".")})


def _matching_preset(fields: dict) -> MAEConfig | None:
    """The maelab preset with these shapes (the paper's ViT-B/L/H among them), if any."""
    for name in list_models():
        preset = get_config(name)
        if all(getattr(preset, k) == v for k, v in fields.items()):
            return preset
    return None


def _default_heads(dim: int, head_dim: int, path: Path) -> int:
    if dim % head_dim:
        raise ValueError(f"{path}: cannot guess the attention heads of a {dim}-wide encoder; pass num_heads")
    return dim // head_dim
