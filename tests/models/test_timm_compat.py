"""The encoder is a drop-in timm ``VisionTransformer``: same keys, same shapes, same features.

This is what lets a pre-trained MAE encoder be fine-tuned or linear-probed with stock timm
(``timm_model.load_state_dict(mae.encoder_state_dict(), strict=True)``).
"""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from maelab.models.mae import MAEConfig, MaskedAutoencoder  # noqa: E402
from maelab.models.registry import create_model, get_config  # noqa: E402

ATOL = 1e-5


def _timm_vit(c: MAEConfig) -> VisionTransformer:
    model = VisionTransformer(
        img_size=c.img_size,
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        embed_dim=c.embed_dim,
        depth=c.depth,
        num_heads=c.num_heads,
        mlp_ratio=c.mlp_ratio,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
    )
    # timm's default norm layer is LayerNorm(eps=1e-6), the same as ours.
    assert model.norm.eps == 1e-6 and model.blocks[0].norm1.eps == 1e-6
    return model.eval()


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every tensor off its structured init (zero biases, unit LayerNorms, zero cls
    position), so a swapped or dropped tensor cannot hide behind an identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


CASES = {
    "debug": get_config("debug"),
    "debug-3ch": get_config("debug", in_chans=3),
    "nonsquare-3ch": MAEConfig(
        img_size=(32, 48), patch_size=8, in_chans=3,
        embed_dim=48, depth=2, num_heads=3,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
        mlp_ratio=2.0,
    ),
    "nonsquare-tall-1ch": MAEConfig(
        img_size=(40, 16), patch_size=4, in_chans=1,
        embed_dim=32, depth=1, num_heads=2,
        decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
    ),
}


def _check_against_timm(c: MAEConfig, seed: int) -> None:
    torch.manual_seed(seed)
    ours = MaskedAutoencoder(c).eval()
    _perturb(ours, seed + 1)
    timm_model = _timm_vit(c)

    enc_sd = ours.encoder_state_dict()
    assert sorted(enc_sd) == sorted(timm_model.state_dict())
    assert _shapes(enc_sd) == _shapes(timm_model.state_dict())
    result = timm_model.load_state_dict(enc_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(3, c.in_chans, *c.img_size, generator=g)
    with torch.no_grad():
        expected = timm_model.forward_features(x)
        got = ours.forward_encoder(x, None)
    assert got.shape == expected.shape == (3, 1 + c.num_patches, c.embed_dim)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_loads_strict_into_timm_and_matches(case: str) -> None:
    _check_against_timm(CASES[case], seed=0)


@pytest.mark.parametrize("case", ["debug", "nonsquare-3ch"])
def test_encoder_mask_tokens_variant_loads_strict_into_timm(case: str) -> None:
    """The SimMIM-style ablation keeps its extra token out of the encoder state dict."""
    c = CASES[case]
    c = MAEConfig.from_dict({**c.to_dict(), "encoder_mask_tokens": True})
    model = MaskedAutoencoder(c)
    assert "encoder_mask_token" in model.state_dict()
    assert "encoder_mask_token" not in model.encoder_state_dict()
    _check_against_timm(c, seed=1)


def test_encoder_state_dict_drops_exactly_the_decoder() -> None:
    model = create_model("debug")
    full = model.state_dict()
    enc = model.encoder_state_dict()
    dropped = set(full) - set(enc)
    assert dropped and all(k.startswith("decoder_") or k == "mask_token" for k in dropped)
    assert not any(k.startswith("decoder") or "mask_token" in k for k in enc)
    for k, v in enc.items():
        assert torch.equal(v, full[k])


def test_timm_check_is_sensitive() -> None:
    """Negative control: perturbing one encoder tensor after loading breaks the match."""
    c = CASES["debug"]
    torch.manual_seed(0)
    ours = MaskedAutoencoder(c).eval()
    timm_model = _timm_vit(c)
    timm_model.load_state_dict(ours.encoder_state_dict(), strict=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # A random (not constant) change: the final LayerNorm would cancel a uniform shift.
        weight = timm_model.blocks[0].attn.qkv.weight
        weight.add_(1e-2 * torch.randn(weight.shape, generator=g))
        x = torch.randn(2, c.in_chans, *c.img_size, generator=g)
        diff = (timm_model.forward_features(x) - ours.forward_encoder(x, None)).abs().max()
    assert diff > ATOL


@pytest.mark.parametrize(
    "ours_name,timm_name",
    [
        ("mae_vit_base_patch16", "vit_base_patch16_224"),
        ("mae_vit_large_patch16", "vit_large_patch16_224"),
        ("mae_vit_huge_patch14", "vit_huge_patch14_224"),
    ],
)
def test_paper_presets_match_timm_architectures(ours_name: str, timm_name: str) -> None:
    """Key sets and shapes of the paper's encoders equal timm's ViT-B/L/H (built on the meta
    device: no memory, no init time)."""
    with torch.device("meta"):
        ours = create_model(ours_name)
        timm_model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    enc = ours.encoder_state_dict()
    ref = timm_model.state_dict()
    assert sorted(enc) == sorted(ref)
    assert _shapes(enc) == _shapes(ref)
