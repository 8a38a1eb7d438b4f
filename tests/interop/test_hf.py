"""``maelab export --to hf`` and the reverse import, checked by loading with transformers."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import ViTMAEForPreTraining, ViTModel  # noqa: E402

from maelab.cli import main  # noqa: E402
from maelab.interop import load_source  # noqa: E402
from maelab.interop.hf import from_hf_state_dict, to_hf_state_dict  # noqa: E402
from maelab.masking import random_masking  # noqa: E402

ATOL = 1e-5


def _inputs(c, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c.in_chans, *c.img_size, generator=g), torch.rand(batch, c.num_patches, generator=g)


@torch.no_grad()
def test_export_loads_as_vitmae_and_vitmodel_and_imports_back(maelab_checkpoint, tmp_path):
    out = tmp_path / "hf"
    assert main(["export", str(maelab_checkpoint), "--to", "hf", "-o", str(out)]) == 0
    ours = load_source(maelab_checkpoint)
    model = ours.build()
    imgs, noise = _inputs(model.config)

    full = ViTMAEForPreTraining.from_pretrained(out).eval()
    assert full.config.norm_pix_loss is True
    hf_out = full(pixel_values=imgs, noise=noise)
    mine = model(imgs, mask=random_masking(3, model.config.num_patches, model.config.mask_ratio, noise=noise).mask)
    assert torch.equal(hf_out.mask, mine.mask)
    torch.testing.assert_close(hf_out.logits, mine.pred, atol=ATOL, rtol=0)
    torch.testing.assert_close(hf_out.loss, mine.loss, atol=ATOL, rtol=0)

    encoder = ViTModel.from_pretrained(out, add_pooling_layer=False).eval()
    torch.testing.assert_close(encoder(pixel_values=imgs).last_hidden_state, model.forward_encoder(imgs, None),
                               atol=ATOL, rtol=0)

    back = load_source(out)
    assert back.origin == "hf" and back.has_decoder and back.config == ours.config
    assert back.data_info.mean == ours.data_info.mean and back.data_info.std == ours.data_info.std
    assert sorted(back.weights) == sorted(ours.weights)
    for key, value in ours.weights.items():
        assert torch.equal(back.weights[key], value), key


@torch.no_grad()
def test_encoder_only_export_is_a_vitmodel(official_files, tmp_path):
    out = tmp_path / "enc"
    assert main(["export", str(official_files["encoder"]), "--to", "hf", "-o", str(out)]) == 0
    vit = ViTModel.from_pretrained(out, add_pooling_layer=False).eval()
    assert vit.config.model_type == "vit"
    imported = load_source(official_files["encoder"])
    x, _ = _inputs(imported.config)
    torch.testing.assert_close(vit(pixel_values=x).last_hidden_state,
                               imported.build(require_decoder=False).forward_encoder(x, None), atol=ATOL, rtol=0)
    back = load_source(out)
    assert not back.has_decoder and sorted(back.weights) == sorted(imported.weights)
    for key, value in imported.weights.items():
        assert torch.equal(back.weights[key], value), key


def test_mapping_round_trip_and_refusals(official_files):
    weights = load_source(official_files["visualize"]).weights
    hf = to_hf_state_dict(weights)
    assert len(hf) == len(weights) + 2 * 2 * 3  # each of 3 blocks: qkv (weight, bias) -> q, k, v
    back = from_hf_state_dict(hf)
    assert sorted(back) == sorted(weights) and all(torch.equal(back[k], weights[k]) for k in weights)
    with pytest.raises(ValueError, match="no Hugging Face name"):
        to_hf_state_dict({**weights, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown Hugging Face"):
        from_hf_state_dict({**hf, "vit.extra": torch.zeros(1)})
