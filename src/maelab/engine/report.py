"""Plain-text tables for the terminal."""

from __future__ import annotations

from maelab.models import build_model, get_config, list_models


def models_table() -> str:
    """One row per preset: geometry, widths and parameter counts (built on the meta device: no memory)."""
    import torch

    header = f"{'name':<24}{'img':>8}{'patch':>6}{'chans':>6}{'encoder':>14}{'decoder':>14}{'params':>10}{'encoder':>10}"
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
