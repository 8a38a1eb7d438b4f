"""MAE with the PCA and HOG targets of the paper's Table 1d."""

import pytest
import torch

from maelab.models import MaskedAutoencoder, create_model
from maelab.targets import fit_pca, hog_dim, make_target, patchify


def _imgs(model: MaskedAutoencoder, batch: int = 4) -> torch.Tensor:
    c = model.config
    return torch.randn(batch, c.in_chans, *c.img_size, generator=torch.Generator().manual_seed(11))


def _pca_model(k: int | None = None) -> MaskedAutoencoder:
    torch.manual_seed(0)
    model = create_model("debug", target="pca", pca_components=k)
    patches = patchify(torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(2)), 8).flatten(0, 1)
    model.set_pca_basis(fit_pca(patches, model.config.num_pca_components))
    return model


def _hog_model() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return create_model("debug", target="hog")


def test_prediction_widths_follow_the_target():
    assert _pca_model(10).decoder_pred.out_features == 10
    assert _pca_model().config.num_pca_components == 8  # 64-dim patches: 1/8
    assert _hog_model().decoder_pred.out_features == hog_dim(8, 1) == 2 * 2 * 9
    for model in (_pca_model(10), _hog_model()):
        out = model(_imgs(model), generator=torch.Generator().manual_seed(0))
        assert out.pred.shape == (4, model.config.num_patches, model.config.target_dim)
        assert out.loss.shape == () and torch.isfinite(out.loss)


@pytest.mark.parametrize("make", [_pca_model, _hog_model])
def test_every_trainable_parameter_gets_a_gradient(make):
    model = make()
    model(_imgs(model), generator=torch.Generator().manual_seed(0)).loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_loss_is_mse_to_the_target_on_masked_patches():
    for model in (_pca_model(6), _hog_model()):
        c = model.config
        imgs = _imgs(model)
        out = model(imgs, generator=torch.Generator().manual_seed(3))
        target = make_target(imgs, c.patch_size, c.target, pca=model.pca_basis())
        per_patch = ((out.pred - target) ** 2).mean(-1)
        assert out.loss.item() == pytest.approx(((per_patch * out.mask).sum() / out.mask.sum()).item(), rel=1e-5)


def test_pca_basis_is_a_checkpointed_buffer_outside_the_encoder():
    model = _pca_model(6)
    state = model.state_dict()
    for name in ("target_pca_mean", "target_pca_std", "target_pca_components", "target_pca_variance"):
        assert name in state and name not in dict(model.named_parameters())
        assert name not in model.encoder_state_dict()
    fresh = MaskedAutoencoder(model.config)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.pca_basis().components, model.pca_basis().components)
    torch.manual_seed(0)
    plain = create_model("debug")
    assert not any(k.startswith("target_") for k in plain.state_dict())


def test_unfitted_pca_and_bad_options_are_value_errors():
    torch.manual_seed(0)
    model = create_model("debug", target="pca")
    with pytest.raises(ValueError, match="not fitted"):
        model(_imgs(model))
    with pytest.raises(ValueError, match="pca_components must be between"):
        create_model("debug", target="pca", pca_components=65)
    with pytest.raises(ValueError, match="applies only to target 'pca'"):
        _hog_model().set_pca_basis(_pca_model().pca_basis())
    with pytest.raises(ValueError, match="the model needs"):
        model.set_pca_basis(_pca_model(6).pca_basis())
