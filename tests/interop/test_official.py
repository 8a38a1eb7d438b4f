"""Importing the official MAE releases: kind detection, key mapping, target, safety, reconstruct."""

from __future__ import annotations

import argparse

import pytest
import torch
from official_format import official_state_dict, save_official
from timm.models.vision_transformer import VisionTransformer

from maelab.cli import main
from maelab.interop import load_source
from maelab.pos_embed import sincos_2d

ATOL = 1e-5


@pytest.mark.parametrize("kind,target,has_decoder", [
    ("encoder", "norm_pixel", False), ("full", "norm_pixel", True), ("visualize", "pixel", True),
])
def test_detects_each_release_kind_and_maps_every_key(official_files, kind, target, has_decoder):
    path = official_files[kind]
    imported = load_source(path)
    c = imported.config
    assert imported.origin == "official" and imported.has_decoder is has_decoder
    assert c.target == target
    assert (c.img_size, c.patch_size, c.in_chans, c.embed_dim, c.depth, c.num_heads, c.mlp_ratio) == (
        (16, 16), 8, 3, 128, 2, 2, 4.0)
    if has_decoder:
        assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (64, 1, 16)
    assert imported.data_info is not None and imported.data_info.mean == (0.485, 0.456, 0.406)
    original = torch.load(path, weights_only=True)["model"]
    assert sorted(imported.weights) == sorted(original)
    for key, value in original.items():
        assert torch.equal(imported.weights[key], value), key


@pytest.mark.parametrize("kind", ["encoder", "visualize"])
@torch.no_grad()
def test_imported_encoder_equals_timm_loaded_from_the_official_dict(official_files, kind):
    """Independent path: timm's ViT loads the official dict's encoder keys strictly; same features."""
    imported = load_source(official_files[kind])
    original = torch.load(official_files[kind], weights_only=True)["model"]
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=0).eval()
    vit.load_state_dict({k: v for k, v in original.items() if not k.startswith(("decoder", "mask_token"))})
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    model = imported.build(require_decoder=False)
    torch.testing.assert_close(model.forward_encoder(x, None), vit.forward_features(x), atol=ATOL, rtol=0)


def test_target_from_args_user_or_refusal(tmp_path):
    sd = official_state_dict(seed=4)
    plain = save_official(tmp_path / "checkpoint-799.pth", sd)
    with pytest.raises(ValueError, match="--target"):
        load_source(plain)
    assert load_source(plain, target="pixel").config.target == "pixel"
    with_args = save_official(tmp_path / "run.pth", sd, argparse.Namespace(norm_pix_loss=False, mask_ratio=0.75))
    imported = load_source(with_args)
    assert imported.config.target == "pixel" and "norm_pix_loss=False" in imported.target_source
    norm = save_official(tmp_path / "run2.pth", sd, argparse.Namespace(norm_pix_loss=True))
    assert load_source(norm).config.target == "norm_pixel"


def test_heads_come_from_a_matching_preset(tmp_path):
    """Shapes do not reveal heads: the debug preset's shapes give its 2 heads (not 32 // 64)."""
    sd = official_state_dict(embed_dim=32, decoder_dim=16, chans=1, grid=4)
    imported = load_source(save_official(tmp_path / "mae_visualize_debug.pth", sd))
    assert imported.config.num_heads == 2 and imported.config.decoder_num_heads == 2


def test_refuses_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    bad = tmp_path / "mae_visualize_vit_evil.pth"
    torch.save({"model": official_state_dict(), "extra": Payload()}, bad)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_source(bad)
    assert not marker.exists()


def test_refuses_classifier_and_foreign_files(tmp_path):
    sd = official_state_dict(decoder=False)
    sd["head.weight"] = torch.zeros(10, 128)
    with pytest.raises(ValueError, match="fine-tuned classifier"):
        load_source(save_official(tmp_path / "mae_finetuned_vit_tiny.pth", sd))
    with pytest.raises(ValueError, match="not an MAE"):
        load_source(save_official(tmp_path / "resnet.pth", {"conv1.weight": torch.zeros(8, 3, 7, 7)}))
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable"):
        load_source(tmp_path / "junk.pth")


def test_resample_to_another_grid(official_files, maelab_checkpoint):
    """A learned (official) table is interpolated; maelab's sin-cos table is recomputed exactly."""
    imported = load_source(official_files["visualize"], img_size=32)
    assert imported.config.grid_size == (4, 4) and imported.data_info.img_size == (32, 32)
    original = torch.load(official_files["visualize"], weights_only=True)["model"]
    for key, dim in (("pos_embed", 128), ("decoder_pos_embed", 64)):
        assert imported.weights[key].shape == (1, 17, dim)
        assert torch.equal(imported.weights[key][:, 0], original[key][:, 0])
    out = imported.build()(torch.randn(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (2, 16, 192) and torch.isfinite(out.loss)

    ours = load_source(maelab_checkpoint, img_size=48)
    assert torch.equal(ours.weights["pos_embed"][0], sincos_2d(32, (6, 6)))
    assert torch.equal(ours.weights["decoder_pos_embed"][0], sincos_2d(16, (6, 6)))


def _png(path, color):
    from PIL import Image

    Image.new("RGB", (40, 30), color).save(path)
    return path


def test_reconstruct_each_kind(official_files, tmp_path, capsys):
    img = _png(tmp_path / "photo.png", (200, 60, 20))
    for kind in ("visualize", "full"):
        out = tmp_path / f"{kind}.png"
        assert main(["reconstruct", str(official_files[kind]), str(img), "-o", str(out)]) == 0
        assert out.stat().st_size > 1000
    out = tmp_path / "encoder.png"
    assert main(["reconstruct", str(official_files["encoder"]), str(img), "-o", str(out)]) == 2
    assert "no decoder to reconstruct with" in capsys.readouterr().err
    assert not out.exists()
    # No images and no dataset recorded: a clear error, not a guess.
    assert main(["reconstruct", str(official_files["visualize"]), "-o", str(out)]) == 2
    assert "pass image files" in capsys.readouterr().err


def test_reconstruction_is_viewable_for_both_targets(official_files):
    """Both kinds give [0, 1] images; the norm-pixel one says it borrowed the true patch statistics."""
    from maelab.visualize.figures import reconstruct
    from maelab.visualize.reconstruct import load_mae

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for kind, note in (("visualize", "pixel model"), ("full", "norm-pixel model")):
        model, info, _ = load_mae(official_files[kind])
        mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
        rec = reconstruct(model, (x - mean) / std, info.mean, info.std, 0.75, "random", 0)
        assert rec.note.startswith(note)
        torch.testing.assert_close(rec.original, x, atol=1e-5, rtol=0)
        assert 0 <= float(rec.reconstruction.min()) and float(rec.reconstruction.max()) <= 1
