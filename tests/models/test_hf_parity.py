"""Numerical parity with ``transformers.ViTMAEForPreTraining`` (an independent MAE implementation).

Our weights are copied into the HF model by ``maelab.interop.hf`` (the mapping that
``maelab export --to hf`` uses), every tensor, position embeddings included (transformers
5.24 builds ``ViTMAEForPreTraining(config)`` with all-zero frozen position
embeddings and zero cls / mask tokens, so its own init is never used here). Both models then
see the same images and the same masking noise, and must give the same mask, predictions
and loss.

Non-square images: not tested against HF. ``ViTMAEDecoder`` builds its position embedding
for an ``int(sqrt(L))``-sided square grid (constructing one with a non-square ``image_size``
fails with a shape error) and ``ViTMAEForPreTraining.patchify`` rejects non-square inputs, so
HF supports square images only. Our non-square path is covered against timm in
``test_timm_compat.py``.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import ViTMAEConfig, ViTMAEForPreTraining  # noqa: E402
from transformers.models.vit_mae import modeling_vit_mae  # noqa: E402

from maelab.interop.hf import hf_config, to_hf_state_dict  # noqa: E402
from maelab.masking import random_masking  # noqa: E402
from maelab.models.mae import MAEConfig, MaskedAutoencoder  # noqa: E402
from maelab.models.registry import get_config  # noqa: E402
from maelab.pos_embed import sincos_2d  # noqa: E402

ATOL = 1e-5


def _to_hf_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    return to_hf_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every tensor off its structured init (zero biases, unit LayerNorms, sin-cos tables),
    so that a mis-mapped bias, norm or embedding cannot hide behind an identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _pair(c: MAEConfig, seed: int = 0) -> tuple[MaskedAutoencoder, ViTMAEForPreTraining]:
    torch.manual_seed(seed)
    ours = MaskedAutoencoder(c).eval()
    _perturb(ours, seed + 1)
    hf = ViTMAEForPreTraining(hf_config(c)).eval()
    hf_sd = _to_hf_state_dict(ours)
    assert sorted(hf_sd) == sorted(hf.state_dict()), "key sets differ"
    result = hf.load_state_dict(hf_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # HF has no buffers (persistent or not) in this model, so the state dict is everything.
    assert [name for name, _ in hf.named_buffers()] == []
    for key, value in hf.state_dict().items():
        assert torch.equal(value, hf_sd[key]), key
    return ours, hf


def _inputs(c: MAEConfig, batch: int = 3, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(batch, c.in_chans, *c.img_size, generator=g)
    noise = torch.rand(batch, c.num_patches, generator=g)
    return imgs, noise


def _three_channel(**overrides) -> MAEConfig:
    base = dict(
        img_size=(32, 32), patch_size=8, in_chans=3,
        embed_dim=48, depth=2, num_heads=3,
        decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4,
        mlp_ratio=2.0,
    )
    base.update(overrides)
    return MAEConfig(**base)


CASES = {
    "debug-1ch-normpix": get_config("debug", target="norm_pixel"),
    "debug-1ch-pixel": get_config("debug", target="pixel"),
    "3ch-normpix": _three_channel(target="norm_pixel"),
    "3ch-pixel-ratio0.5": _three_channel(target="pixel", mask_ratio=0.5),
    "3ch-patch4-normpix": _three_channel(img_size=(16, 16), patch_size=4, target="norm_pixel", mask_ratio=0.6),
}


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_forward_matches_hf(case: str) -> None:
    """Same weights, image and noise: same mask, same per-patch predictions, same loss."""
    c = CASES[case]
    ours, hf = _pair(c)
    imgs, noise = _inputs(c)

    hf_out = hf(pixel_values=imgs, noise=noise)
    sample = random_masking(imgs.shape[0], c.num_patches, c.mask_ratio, noise=noise)
    # Our forward with an explicit mask keeps the visible tokens in patch order (HF: noise
    # order); attention is permutation-equivariant, so the outputs must still agree.
    out = ours(imgs, mask=sample.mask)

    assert torch.equal(hf_out.mask, sample.mask)
    assert torch.equal(out.mask, hf_out.mask)
    assert out.pred.shape == hf_out.logits.shape == (imgs.shape[0], c.num_patches, c.patch_dim)
    torch.testing.assert_close(out.pred, hf_out.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, hf_out.loss, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", ["debug-1ch-normpix", "3ch-normpix"])
@torch.no_grad()
def test_encoder_and_decoder_match_hf_token_by_token(case: str) -> None:
    """With the noise-order sample the encoder tokens line up one-to-one with HF's latent."""
    c = CASES[case]
    ours, hf = _pair(c, seed=7)
    imgs, noise = _inputs(c, seed=99)

    hf_enc = hf.vit(pixel_values=imgs, noise=noise)
    sample = random_masking(imgs.shape[0], c.num_patches, c.mask_ratio, noise=noise)
    latent = ours.forward_encoder(imgs, sample)
    assert latent.shape == hf_enc.last_hidden_state.shape == (imgs.shape[0], 1 + sample.num_keep, c.embed_dim)
    torch.testing.assert_close(latent, hf_enc.last_hidden_state, atol=ATOL, rtol=0)

    pred = ours.forward_decoder(latent, sample)
    hf_pred = hf.decoder(hf_enc.last_hidden_state, hf_enc.ids_restore).logits
    torch.testing.assert_close(pred, hf_pred, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch,length,ratio", [(4, 16, 0.75), (2, 49, 0.75), (3, 64, 0.5), (5, 10, 0.35)])
@torch.no_grad()
def test_random_masking_matches_hf(batch: int, length: int, ratio: float) -> None:
    """Same noise -> identical ids_restore, mask and kept tokens as HF's random masking."""
    g = torch.Generator().manual_seed(batch * 1000 + length)
    noise = torch.rand(batch, length, generator=g)
    dim = 4
    sequence = torch.randn(batch, length, dim, generator=g)

    # random_masking depends only on the config's mask_ratio, not on the embedding's own size.
    tiny = ViTMAEConfig(
        hidden_size=dim, num_hidden_layers=1, num_attention_heads=1, intermediate_size=dim,
        image_size=4, patch_size=4, mask_ratio=ratio,
    )
    embeddings = modeling_vit_mae.ViTMAEEmbeddings(tiny)
    hf_kept, hf_mask, hf_ids_restore = embeddings.random_masking(sequence, noise=noise)

    sample = random_masking(batch, length, ratio, noise=noise)
    assert torch.equal(sample.ids_restore, hf_ids_restore)
    assert torch.equal(sample.mask, hf_mask)
    assert sample.mask.dtype == hf_mask.dtype
    kept = torch.gather(sequence, 1, sample.ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    assert torch.equal(kept, hf_kept)


@torch.no_grad()
def test_random_masking_matches_hf_model_outputs() -> None:
    """The ids_restore / mask the full HF model reports equal ours for the same noise."""
    c = CASES["debug-1ch-normpix"]
    ours, hf = _pair(c, seed=3)
    imgs, noise = _inputs(c, batch=4, seed=5)
    hf_out = hf(pixel_values=imgs, noise=noise)
    sample = random_masking(4, c.num_patches, c.mask_ratio, noise=noise)
    assert torch.equal(sample.ids_restore, hf_out.ids_restore)
    assert torch.equal(sample.mask, hf_out.mask)
    assert int(hf_out.mask[0].sum()) == c.num_patches - sample.num_keep


@pytest.mark.parametrize("dim,grid", [(32, (4, 4)), (16, (7, 7)), (64, (3, 5))])
def test_sincos_matches_hf_layout(dim: int, grid: tuple[int, int]) -> None:
    """Our fixed position table equals what HF's init would load: its builder gives
    [sin_h|cos_h|sin_w|cos_w] and it swaps the halves to the reference code's
    [sin_w|cos_w|sin_h|cos_h] (the layout of the released checkpoints)."""
    hf = modeling_vit_mae.build_2d_sinusoidal_position_embedding(
        height=grid[0], width=grid[1], embed_dim=dim, cls_token=True
    )
    half = dim // 2
    hf = torch.cat([hf[..., half:], hf[..., :half]], dim=-1)
    torch.testing.assert_close(sincos_2d(dim, grid), hf, atol=1e-6, rtol=0)


@torch.no_grad()
def test_parity_check_is_sensitive() -> None:
    """Negative control: a wrong conversion (q and k swapped in one block) must break parity,
    so the tolerance above is tight enough to catch mapping mistakes."""
    c = CASES["debug-1ch-normpix"]
    ours, hf = _pair(c)
    imgs, noise = _inputs(c)
    sd = _to_hf_state_dict(ours)
    prefix = "vit.layers.0.attention"
    sd[f"{prefix}.q_proj.weight"], sd[f"{prefix}.k_proj.weight"] = (
        sd[f"{prefix}.k_proj.weight"], sd[f"{prefix}.q_proj.weight"]
    )
    hf.load_state_dict(sd, strict=True)
    hf_out = hf(pixel_values=imgs, noise=noise)
    out = ours(imgs, mask=random_masking(imgs.shape[0], c.num_patches, c.mask_ratio, noise=noise).mask)
    assert (out.pred - hf_out.logits).abs().max() > 1e-3

