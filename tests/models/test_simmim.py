"""SimMIM: coarse masks, all patches in the encoder, L1 loss on masked pixels only, timm-compatible encoder."""

import pytest
import timm
import torch

from maelab.models import MAEOutput, SimMIM, build_model, create_model, get_config
from maelab.targets import patchify


def _model(**overrides) -> SimMIM:
    torch.manual_seed(0)
    return create_model("simmim_debug", **overrides)


def _imgs(model: SimMIM, batch: int = 4) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.in_chans, *c.img_size, generator=torch.Generator().manual_seed(21))


def test_forward_returns_mae_output_with_coarse_masks():
    model = _model()
    out = model(_imgs(model), generator=torch.Generator().manual_seed(0))
    assert type(out) is MAEOutput and out.loss.shape == ()
    assert out.pred.shape == (4, 64, 16) and out.mask.shape == (4, 64)
    assert torch.all(out.mask.sum(1) == 40)


def test_loss_is_l1_on_masked_pixels_and_ignores_visible_ones():
    model = _model()
    imgs = _imgs(model)
    out = model(imgs, generator=torch.Generator().manual_seed(1))
    target = patchify(imgs, 4)
    w = out.mask.unsqueeze(-1)
    expected = ((out.pred - target).abs() * w).sum() / (w.sum() * target.shape[-1])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Changing visible pixels' predictions or targets by a lot leaves the loss unchanged ...
    noise = torch.randn_like(target) * 100 * (1 - w)
    for pred, tgt in ((out.pred + noise, target), (out.pred, target + noise)):
        recomputed = ((pred - tgt).abs() * w).sum() / (w.sum() * target.shape[-1])
        assert recomputed.item() == pytest.approx(out.loss.item(), rel=1e-5)
    # The model's own loss: its gradient reaches the masked patches' predictions only.
    out.pred.retain_grad()
    out.loss.backward()
    grad = out.pred.grad.abs().sum(-1)  # (B, L)
    assert torch.all(grad[out.mask == 0] == 0) and torch.all(grad[out.mask == 1] > 0)


def test_explicit_masks_are_used_and_checked():
    model = _model().eval()
    imgs = _imgs(model, 2)
    mask = model.sample_mask(2, generator=torch.Generator().manual_seed(3)).mask
    out = model(imgs, mask=mask)
    assert torch.equal(out.mask, mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        model(imgs, mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="only 0"):
        model(imgs, mask=torch.zeros(2, 64))


def test_every_trainable_parameter_gets_a_gradient():
    model = _model()
    model(_imgs(model), generator=torch.Generator().manual_seed(0)).loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []
    assert sorted(n for n, p in model.named_parameters() if not p.requires_grad) == ["pos_embed"]


def test_encoder_keys_load_into_timm_and_match_the_mae_encoder():
    model = _model().eval()
    encoder = model.encoder_state_dict()
    assert "mask_token" not in encoder and not any(k.startswith("decoder_") for k in encoder)
    c = model.config
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim, depth=c.depth,
        num_heads=c.num_heads, num_classes=0, global_pool="token",
    ).eval()
    vit.load_state_dict(encoder, strict=True)
    imgs = _imgs(model, 2)
    assert torch.allclose(vit.forward_features(imgs), model.forward_encoder(imgs), atol=1e-5)
    # The fashion preset's encoder is mae_vit_fashion's, key for key and shape for shape.
    with torch.device("meta"):
        simmim = build_model(get_config("simmim_vit_fashion")).encoder_state_dict()
        mae = build_model(get_config("mae_vit_fashion")).encoder_state_dict()
    assert {k: v.shape for k, v in simmim.items()} == {k: v.shape for k, v in mae.items()}


def test_simmim_config_errors():
    with pytest.raises(ValueError, match="SimMIM predicts pixels"):
        get_config("simmim_debug", target="hog")
    with pytest.raises(ValueError, match="mask_strategy 'random'"):
        get_config("simmim_debug", mask_strategy="block")
    with pytest.raises(ValueError, match="arch must be one of"):
        get_config("debug", arch="beit")
    with pytest.raises(ValueError, match="mask strategy 'grid' is not available"):
        _model().sample_mask(2, strategy="grid")
    assert get_config("simmim_vit_fashion").mask_ratio == 0.6
