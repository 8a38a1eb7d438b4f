"""The timm CNN baseline: small images keep their resolution through the stem, and the config rebuilds it."""

from __future__ import annotations

import pytest
import timm
import torch

from maelab.models.cnn import build_cnn, cnn_config


@pytest.mark.parametrize("arch", ["resnet18", "resnet10t"])
def test_small_images_keep_the_stems_resolution(arch):
    cfg = cnn_config(arch, in_chans=1, num_classes=10, img_size=28)
    assert cfg["small_input_stem"]
    model = build_cnn(cfg)
    feats = model.forward_features(torch.zeros(2, 1, 28, 28))  # (2, C, h, w)
    assert feats.shape[-2:] == (2, 2)  # stem 28, max pool 14, then three stride-2 stages: 7, 4, 2
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_large_images_keep_timms_network_and_keys():
    cfg = cnn_config("resnet18", in_chans=3, num_classes=5, img_size=64)
    assert not cfg["small_input_stem"]
    model = build_cnn(cfg)
    stock = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=5)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}


def test_the_recorded_config_rebuilds_the_same_weights_layout():
    cfg = cnn_config("resnet18", in_chans=1, num_classes=10, img_size=28)
    torch.manual_seed(0)
    a = build_cnn(cfg).state_dict()
    torch.manual_seed(0)
    b = build_cnn(cfg).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["conv1.weight"].shape == (64, 1, 3, 3)


def test_unknown_or_unadapted_architectures_are_refused():
    with pytest.raises(ValueError, match="not a timm model"):
        cnn_config("resnet_nope", 1, 10, 28)
    with pytest.raises(ValueError, match="no small-image stem adaptation"):
        build_cnn(cnn_config("efficientnet_b0", 1, 10, 28))
