"""``maelab export --to timm|onnx|safetensors``: each file loaded back and compared with maelab."""

from __future__ import annotations

import json
import logging

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from maelab.cli import main
from maelab.interop import load_source
from maelab.interop.export import timm_kwargs, timm_name

ATOL = 1e-5


def _x(c, batch=3, seed=0):
    return torch.randn(batch, c.in_chans, *c.img_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("head_classes", [1000, 0])
@pytest.mark.parametrize("source", ["maelab", "official"])
@torch.no_grad()
def test_timm_export_loads_with_pretrained_cfg_overlay(maelab_checkpoint, official_files, tmp_path, source,
                                                       head_classes):
    path = maelab_checkpoint if source == "maelab" else official_files["visualize"]
    out = tmp_path / "enc.safetensors"
    assert main(["export", str(path), "--to", "timm", "--head-classes", str(head_classes), "-o", str(out)]) == 0
    imported = load_source(path)
    with safe_open(str(out), "pt") as handle:
        meta = handle.metadata()
        names = set(handle.keys())
    assert names - set(imported.encoder_weights()) == ({"head.weight", "head.bias"} if head_classes else set())
    kwargs = json.loads(meta["timm_kwargs"])
    assert kwargs == json.loads(json.dumps(timm_kwargs(imported.config)))
    assert meta["timm_architecture"].endswith(".mae") == (head_classes == 0)
    vit = timm.create_model(meta["timm_architecture"], pretrained=True,
                            pretrained_cfg_overlay=dict(file=str(out)), **kwargs).eval()
    x = _x(imported.config)
    torch.testing.assert_close(vit.forward_features(x), imported.build(require_decoder=False).forward_encoder(x, None),
                               atol=ATOL, rtol=0)


@pytest.mark.slow  # ~20 s on 2 cores: an 86M-parameter model built three times
@torch.no_grad()
def test_timm_export_of_vit_base_loads_by_its_timm_name(tmp_path):
    """ViT-B/16 shapes: the issue's literal call ``timm.create_model('vit_base_patch16_224',
    pretrained=True, pretrained_cfg_overlay=dict(file=...))`` loads the default export (its zero
    1000-way head gives zero logits), as does ``num_classes=0``; ``--head-classes 0`` loads by the
    ``.mae`` tag, whose pretrained config has no head."""
    from maelab.checkpoint import CheckpointMeta, save_checkpoint
    from maelab.models import create_model

    torch.manual_seed(0)
    model = create_model("mae_vit_base_patch16", decoder_depth=1, decoder_embed_dim=64, decoder_num_heads=2).eval()
    meta = CheckpointMeta(kind="mae", model_config=model.config.to_dict())
    ckpt = save_checkpoint(tmp_path / "b16", model.state_dict(), meta)
    out, headless = tmp_path / "b16-timm.safetensors", tmp_path / "b16-timm-headless.safetensors"
    assert main(["export", str(ckpt), "--to", "timm", "-o", str(out)]) == 0
    assert main(["export", str(ckpt), "--to", "timm", "--head-classes", "0", "-o", str(headless)]) == 0
    assert timm_name(model.config) == "vit_base_patch16_224"
    x = _x(model.config, batch=1)
    expected = model.forward_encoder(x, None)
    for name, extra, file in (("vit_base_patch16_224", {}, out), ("vit_base_patch16_224", {"num_classes": 0}, out),
                              ("vit_base_patch16_224.mae", {}, headless)):
        vit = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **extra).eval()
        torch.testing.assert_close(vit.forward_features(x), expected, atol=ATOL, rtol=0)
        if not extra and file == out:
            assert torch.count_nonzero(vit(x)) == 0  # the untrained head


@pytest.mark.parametrize("encoder_only", [False, True])
def test_safetensors_export_holds_plain_weights(maelab_checkpoint, tmp_path, encoder_only):
    out = tmp_path / "w.safetensors"
    argv = ["export", str(maelab_checkpoint), "--to", "safetensors", "-o", str(out)]
    assert main(argv + (["--encoder-only"] if encoder_only else [])) == 0
    imported = load_source(maelab_checkpoint)
    expected = imported.encoder_weights() if encoder_only else imported.weights
    got = load_file(str(out))
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    with safe_open(str(out), "pt") as handle:
        assert json.loads(handle.metadata()["model_config"]) == imported.config.to_dict()
    # The same weights rebuild the same model outputs.
    model = imported.build()
    if not encoder_only:
        from maelab.models import MAEConfig, MaskedAutoencoder

        again = MaskedAutoencoder(MAEConfig.from_dict(imported.config.to_dict())).eval()
        again.load_state_dict(got, strict=True)
        x = _x(imported.config)
        mask = torch.zeros(3, imported.config.num_patches)
        mask[:, ::2] = 1
        torch.testing.assert_close(again(x, mask=mask).pred, model(x, mask=mask).pred, atol=ATOL, rtol=0)


@pytest.mark.parametrize("source", ["maelab", "official-encoder"])
def test_onnx_encoder_matches_maelab(maelab_checkpoint, official_files, tmp_path, source):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from maelab.interop.onnx import onnx_session

    path = maelab_checkpoint if source == "maelab" else official_files["encoder"]
    out = tmp_path / "enc.onnx"
    assert main(["export", str(path), "--to", "onnx", "-o", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("enc.onnx")] == ["enc.onnx"]  # self-contained
    imported = load_source(path)
    session = onnx_session(out)
    with torch.no_grad():
        model = imported.build(require_decoder=False)
        for batch in (1, 4):
            x = _x(imported.config, batch=batch, seed=batch)
            got = torch.from_numpy(session.run(None, {"pixel_values": x.numpy()})[0])
            torch.testing.assert_close(got, model.forward_encoder(x, None), atol=ATOL, rtol=0)


@torch.no_grad()
def test_export_at_another_resolution(maelab_checkpoint, tmp_path):
    out = tmp_path / "enc48.safetensors"
    assert main(["export", str(maelab_checkpoint), "--to", "timm", "--img-size", "48", "-o", str(out)]) == 0
    resized = load_source(maelab_checkpoint, img_size=48)
    vit = timm.create_model("vit_base_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)),
                            **timm_kwargs(resized.config)).eval()
    x = _x(resized.config)
    assert x.shape[-1] == 48
    torch.testing.assert_close(vit.forward_features(x), resized.build().forward_encoder(x, None), atol=ATOL, rtol=0)


def test_export_refusals(maelab_checkpoint, official_files, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep me")
    assert main(["export", str(maelab_checkpoint), "--to", "timm", "-o", str(out)]) == 2
    assert out.read_bytes() == b"keep me" and "already exists" in capsys.readouterr().err
    assert main(["export", str(maelab_checkpoint), "--to", "timm", "--img-size", "30",
                 "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "patch size 8 must divide" in capsys.readouterr().err
    assert main(["export", str(maelab_checkpoint), "--to", "safetensors", "--target", "pixel",
                 "-o", str(tmp_path / "z.safetensors")]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert not (tmp_path / "y.safetensors").exists() and not (tmp_path / "z.safetensors").exists()


def test_negative_head_classes_is_refused_before_reading(tmp_path, capsys):
    missing = tmp_path / "never-read.safetensors"
    assert main(["export", str(missing), "--to", "timm", "--head-classes", "-3"]) == 2
    assert "--head-classes must be 0" in capsys.readouterr().err


@torch.no_grad()
def test_timm_export_without_the_extension_gets_it_and_loads(maelab_checkpoint, tmp_path, caplog):
    """timm picks its reader by the file's extension: ``-o model`` writes model.safetensors, the file timm's
    create_model call in the log names."""
    with caplog.at_level(logging.INFO, logger="maelab.interop.export"):
        assert main(["export", str(maelab_checkpoint), "--to", "timm", "-o", str(tmp_path / "model")]) == 0
    out = tmp_path / "model.safetensors"
    assert out.is_file() and not (tmp_path / "model").exists()
    assert any(f"file={str(out)!r}" in r.getMessage() for r in caplog.records)
    with safe_open(str(out), "pt") as handle:
        meta = handle.metadata()
    vit = timm.create_model(meta["timm_architecture"], pretrained=True, pretrained_cfg_overlay=dict(file=str(out)),
                            **json.loads(meta["timm_kwargs"])).eval()
    imported = load_source(maelab_checkpoint)
    x = _x(imported.config)
    torch.testing.assert_close(vit.forward_features(x), imported.build(require_decoder=False).forward_encoder(x, None),
                               atol=ATOL, rtol=0)
