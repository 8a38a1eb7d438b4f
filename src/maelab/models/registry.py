"""Model presets by timm-style name: ``create_model("mae_vit_base_patch16")``."""

from __future__ import annotations

import dataclasses

import torch

from maelab.models.mae import MAEConfig, MaskedAutoencoder, is_decoder_key
from maelab.models.simmim import SimMIM

_PAPER_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)

_PRESETS: dict[str, MAEConfig] = {
    # The paper's three encoders with its default decoder (dec512d8b).
    "mae_vit_base_patch16": MAEConfig(embed_dim=768, depth=12, num_heads=12, **_PAPER_DECODER),
    "mae_vit_large_patch16": MAEConfig(embed_dim=1024, depth=24, num_heads=16, **_PAPER_DECODER),
    "mae_vit_huge_patch14": MAEConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16, **_PAPER_DECODER),
    # Smaller encoders (timm's ViT-S / ViT-Ti widths) with proportionally lighter decoders.
    "mae_vit_small_patch16": MAEConfig(
        embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8
    ),
    "mae_vit_tiny_patch16": MAEConfig(
        embed_dim=192, depth=12, num_heads=3, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4
    ),
    # 28x28 grayscale (Fashion-MNIST) on a laptop CPU: 4x4 patches give a 7x7 grid.
    "mae_vit_fashion": MAEConfig(
        img_size=(28, 28), patch_size=4, in_chans=1,
        embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
    ),
    # The default: mae_vit_fashion with 7x7 patches (a 4x4 grid). Within a fixed time budget its 2.2x cheaper
    # steps buy 2.2x the passes over the data, which gave the best frozen features in the recipe search
    # (results/recipe_search/).
    "mae_vit_fashion_patch7": MAEConfig(
        img_size=(28, 28), patch_size=7, in_chans=1,
        embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
    ),
    # Tiny model for tests: runs a step in milliseconds.
    "debug": MAEConfig(
        img_size=(32, 32), patch_size=8, in_chans=1,
        embed_dim=32, depth=2, num_heads=2,
        decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
    ),
    # SimMIM (Xie et al. 2021) with mae_vit_fashion's encoder: 2x2-patch mask blocks, ratio 0.6,
    # raw-pixel target (its paper's choice). The decoder_* fields are unused.
    "simmim_vit_fashion": MAEConfig(
        img_size=(28, 28), patch_size=4, in_chans=1,
        embed_dim=192, depth=6, num_heads=3,
        arch="simmim", mask_ratio=0.6, mask_patch_size=2, target="pixel",
    ),
    # Tiny SimMIM for tests: an 8x8 patch grid, so 2x2 mask blocks tile it exactly.
    "simmim_debug": MAEConfig(
        img_size=(32, 32), patch_size=4, in_chans=1,
        embed_dim=32, depth=2, num_heads=2,
        arch="simmim", mask_ratio=0.6, mask_patch_size=2, target="pixel",
    ),
}


DEFAULT_MODEL = "mae_vit_fashion_patch7"
"""The preset of a new pre-training run (and of an evaluation's --init none) when none is named."""


def list_models() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(_PRESETS)


def get_config(name: str, **overrides) -> MAEConfig:
    """A preset's config with fields replaced by ``overrides`` (validated again)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown model options {sorted(unknown)}; valid options: {', '.join(sorted(fields))}")
    return dataclasses.replace(_PRESETS[name], **overrides)


def build_model(config: MAEConfig) -> MaskedAutoencoder | SimMIM:
    """The model a config describes: :class:`MaskedAutoencoder` or, for ``arch="simmim"``, :class:`SimMIM`."""
    return SimMIM(config) if config.arch == "simmim" else MaskedAutoencoder(config)


def weights_mismatch(config: MAEConfig, weights: dict[str, torch.Tensor], with_decoder: bool = True) -> str | None:
    """None if ``weights`` hold exactly the tensors of ``config``'s model (its encoder alone unless
    ``with_decoder``), else a description of the missing, unexpected and mis-shaped tensors."""
    # Built on the meta device: only names and shapes are needed, no memory or init time.
    with torch.device("meta"):
        reference = build_model(config)
    state = reference.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items() if with_decoder or not is_decoder_key(k)}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if expected == got:
        return None
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    return (f"missing {sorted(expected.keys() - got.keys())[:5]}, "
            f"unexpected {sorted(got.keys() - expected.keys())[:5]}, "
            f"wrong shape {[(k, got[k], expected[k]) for k in wrong[:3]]}")


def create_model(name: str, **overrides) -> MaskedAutoencoder | SimMIM:
    """Build a preset by name, e.g. ``create_model("mae_vit_base_patch16", decoder_depth=1)``."""
    return build_model(get_config(name, **overrides))


def preset_help(purpose: str) -> str:
    """The --model help line: what the preset is for here, and every preset name (the choices)."""
    return f"{purpose} One of: {', '.join(list_models())} (`maelab models` lists their sizes)."


def models_table() -> str:
    """One row per preset: geometry, widths and parameter counts (built on the meta device: no memory)."""
    header = (f"{'name':<24}{'img':>8}{'patch':>6}{'chans':>6}{'encoder':>14}{'decoder':>14}"
              f"{'params':>10}{'encoder':>10}")
    lines = [header, f"{'':<24}{'':>8}{'':>6}{'':>6}{'dim/depth/hd':>14}{'dim/depth/hd':>14}{'(M)':>10}{'(M)':>10}"]
    for name in list_models():
        cfg = get_config(name)
        with torch.device("meta"):
            model = build_model(cfg)
        total = sum(p.numel() for p in model.parameters())
        encoder = sum(v.numel() for v in model.encoder_state_dict().values())
        decoder = "linear head" if cfg.arch == "simmim" else (
            f"{cfg.decoder_embed_dim}/{cfg.decoder_depth}/{cfg.decoder_num_heads}")
        lines.append(
            f"{name:<24}{cfg.img_size[0]:>4}x{cfg.img_size[1]:<3}{cfg.patch_size:>6}{cfg.in_chans:>6}"
            f"{f'{cfg.embed_dim}/{cfg.depth}/{cfg.num_heads}':>14}"
            f"{decoder:>14}"
            f"{total / 1e6:>10.2f}{encoder / 1e6:>10.2f}"
        )
    return "\n".join(lines)
