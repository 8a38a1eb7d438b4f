"""Hugging Face ``transformers`` ViT-MAE / ViT: key mapping, export and import.

maelab's flat keys (timm's, for the encoder) map one to one onto ``ViTMAEForPreTraining``
(prefix ``vit.`` for the encoder, ``decoder.`` for the decoder), except that timm's fused
``attn.qkv`` (rows ordered q | k | v) is three ``{q,k,v}_proj`` there. ``ViTModel`` uses the
encoder names without the ``vit.`` prefix, so one exported directory loads into both:
``ViTMAEForPreTraining.from_pretrained(d)`` and ``ViTModel.from_pretrained(d, add_pooling_layer=False)``.
The names are those of transformers 5.x (``layers.N.attention.q_proj``); directories in the older
layout are read through transformers itself, which converts them on load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from maelab.interop.imported import IMAGENET_MEAN, IMAGENET_STD, ImportedModel
from maelab.models.config import MAEConfig

_DIRECT = {  # maelab key -> ViTMAEForPreTraining key
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "vit.layernorm.weight",
    "norm.bias": "vit.layernorm.bias",
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "mask_token": "decoder.mask_token",
    "decoder_pos_embed": "decoder.decoder_pos_embed",
    "decoder_norm.weight": "decoder.decoder_norm.weight",
    "decoder_norm.bias": "decoder.decoder_norm.bias",
    "decoder_pred.weight": "decoder.decoder_pred.weight",
    "decoder_pred.bias": "decoder.decoder_pred.bias",
}
_BLOCK = {  # timm Block name -> HF layer name (weight and bias each)
    "attn.proj": "attention.o_proj", "norm1": "layernorm_before", "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_BLOCKS = (("blocks", "vit.layers"), ("decoder_blocks", "decoder.decoder_layers"))


def to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """maelab keys -> ``ViTMAEForPreTraining`` keys; an encoder-only dict gives the ``vit.*`` part.

    Every source tensor is consumed exactly once (ValueError otherwise).
    """
    if "encoder_mask_token" in sd:
        raise ValueError("Hugging Face ViT-MAE has no mask-tokens-in-the-encoder variant (--encoder-mask-tokens)")
    out = {_DIRECT[k]: v for k, v in sd.items() if k in _DIRECT}
    used = {k for k in sd if k in _DIRECT}
    for ours, theirs in _BLOCKS:
        for i in range(_count(sd, ours)):
            src, dst = f"{ours}.{i}", f"{theirs}.{i}"
            for kind in ("weight", "bias"):
                q, k, v = sd[f"{src}.attn.qkv.{kind}"].chunk(3, dim=0)  # (D, ...) each, from (3D, ...)
                out[f"{dst}.attention.q_proj.{kind}"] = q
                out[f"{dst}.attention.k_proj.{kind}"] = k
                out[f"{dst}.attention.v_proj.{kind}"] = v
                used.add(f"{src}.attn.qkv.{kind}")
                for a, b in _BLOCK.items():
                    out[f"{dst}.{b}.{kind}"] = sd[f"{src}.{a}.{kind}"]
                    used.add(f"{src}.{a}.{kind}")
    if used != set(sd):
        raise ValueError(f"no Hugging Face name for {sorted(set(sd) - used)[:5]}")
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``ViTMAEForPreTraining`` (or ``ViTModel``, without the ``vit.`` prefix) keys -> maelab keys."""
    if "embeddings.cls_token" in hf:
        hf = {f"vit.{k}": v for k, v in hf.items() if not k.startswith("pooler.")}
    back = {v: k for k, v in _DIRECT.items()}
    out = {back[k]: v for k, v in hf.items() if k in back}
    used = {k for k in hf if k in back}
    for ours, theirs in _BLOCKS:
        for i in range(_count(hf, theirs, depth_at=theirs.count(".") + 1)):
            src, dst = f"{theirs}.{i}", f"{ours}.{i}"
            for kind in ("weight", "bias"):
                parts = [f"{src}.attention.{n}_proj.{kind}" for n in "qkv"]
                out[f"{dst}.attn.qkv.{kind}"] = torch.cat([hf[p] for p in parts], dim=0)  # (3D, ...)
                used.update(parts)
                for a, b in _BLOCK.items():
                    out[f"{dst}.{a}.{kind}"] = hf[f"{src}.{b}.{kind}"]
                    used.add(f"{src}.{b}.{kind}")
    if used != set(hf):
        raise ValueError(f"unknown Hugging Face ViT-MAE tensors {sorted(set(hf) - used)[:5]}")
    return out


def _count(sd: dict, prefix: str, depth_at: int = 1) -> int:
    return len({k.split(".")[depth_at] for k in sd if k.startswith(prefix + ".")})


def hf_config(c: MAEConfig):
    """The ``ViTMAEConfig`` of a maelab architecture (square images only, as HF requires)."""
    from transformers import ViTMAEConfig

    rows, cols = c.grid_size
    if rows != cols:
        raise ValueError(f"Hugging Face ViT-MAE takes square images only; this model takes {c.img_size}")
    return ViTMAEConfig(
        hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
        intermediate_size=int(c.embed_dim * c.mlp_ratio), decoder_hidden_size=c.decoder_embed_dim,
        decoder_num_hidden_layers=c.decoder_depth, decoder_num_attention_heads=c.decoder_num_heads,
        decoder_intermediate_size=int(c.decoder_embed_dim * c.mlp_ratio), image_size=c.img_size[0],
        patch_size=c.patch_size, num_channels=c.in_chans, mask_ratio=c.mask_ratio,
        norm_pix_loss=c.target == "norm_pixel", layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def config_from_hf(raw: dict) -> MAEConfig:
    """A maelab architecture from an HF ``config.json`` (ViT-MAE or plain ViT)."""
    if raw.get("hidden_act", "gelu") != "gelu" or not raw.get("qkv_bias", True):
        raise ValueError("only ViTs with GELU and qkv biases (as MAE's) can be imported")
    size = raw.get("image_size", 224)
    fields = dict(
        img_size=size, patch_size=raw.get("patch_size", 16), in_chans=raw.get("num_channels", 3),
        embed_dim=raw["hidden_size"], depth=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
        mlp_ratio=raw["intermediate_size"] / raw["hidden_size"],
        target="norm_pixel" if raw.get("norm_pix_loss", False) else "pixel",
        mask_ratio=raw.get("mask_ratio", 0.75),
    )
    if "decoder_hidden_size" in raw:
        fields.update(decoder_embed_dim=raw["decoder_hidden_size"], decoder_depth=raw["decoder_num_hidden_layers"],
                      decoder_num_heads=raw["decoder_num_attention_heads"])
    return MAEConfig(**fields)


def save_hf(imported: ImportedModel, out_dir: Path, encoder_only: bool = False) -> Path:
    """Write a ``save_pretrained`` directory: ViTMAEForPreTraining, or ViTModel for an encoder."""
    from transformers import (
        ViTConfig,
        ViTImageProcessor,
        ViTMAEForPreTraining,
        ViTModel,
    )

    config = hf_config(imported.config)
    if imported.has_decoder and not encoder_only:
        model = ViTMAEForPreTraining(config)
        state = to_hf_state_dict(imported.weights)
    else:
        shared = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                  "patch_size", "num_channels", "layer_norm_eps", "hidden_act", "qkv_bias", "hidden_dropout_prob",
                  "attention_probs_dropout_prob", "norm_pix_loss")
        # norm_pix_loss rides along as an extra attribute: what the encoder was pre-trained to predict.
        model = ViTModel(ViTConfig(**{k: getattr(config, k) for k in shared}), add_pooling_layer=False)
        state = {k.removeprefix("vit."): v for k, v in to_hf_state_dict(imported.encoder_weights()).items()}
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out_dir)
    info = imported.data_info
    mean, std = (info.mean, info.std) if info is not None else (IMAGENET_MEAN, IMAGENET_STD)
    if len(mean) == imported.config.in_chans:
        height, width = imported.config.img_size
        ViTImageProcessor(image_mean=list(mean), image_std=list(std),
                          size={"height": height, "width": width}).save_pretrained(out_dir)
    return Path(out_dir)


def load_hf(path: Path) -> ImportedModel:
    """Read a transformers ViT-MAE (encoder + decoder) or ViT (encoder) directory into maelab keys."""
    from transformers import ViTMAEForPreTraining, ViTModel

    from maelab.data import DatasetInfo

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    kind = raw.get("model_type")
    if kind not in ("vit_mae", "vit"):
        raise ValueError(f"{path} holds a {kind!r} model; maelab imports 'vit_mae' and 'vit' directories")
    config = config_from_hf(raw)
    if kind == "vit_mae":
        model = ViTMAEForPreTraining.from_pretrained(path, local_files_only=True, use_safetensors=None)
    else:
        model = ViTModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    weights = from_hf_state_dict({k: v.detach().float() for k, v in model.state_dict().items()})
    has_decoder = "decoder_embed.weight" in weights
    info = None
    proc = path / "preprocessor_config.json"
    if proc.is_file():
        stats = json.loads(proc.read_text())
        mean, std = tuple(stats.get("image_mean", ())), tuple(stats.get("image_std", ()))
        if len(mean) == len(std) == config.in_chans:
            info = DatasetInfo(name="hf", channels=config.in_chans, img_size=config.img_size, mean=mean, std=std,
                               num_classes=0, class_names=())
    return ImportedModel(path=path, config=config, weights=weights, has_decoder=has_decoder, origin="hf",
                         target_source=f"config.json norm_pix_loss={raw.get('norm_pix_loss', False)}",
                         data_info=info, name=path.name)
