"""The demo's image pipeline, without any web layer: decode, convert, normalize, mask, reconstruct."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.data import eval_transform
from maelab.data.images import load_image
from maelab.demo.attention import block_cls_attention, cls_attention_map
from maelab.demo.pipeline import ImageTooLarge, load_upload, run_pipeline
from maelab.masking import mask_from_binary
from maelab.visualize.reconstruct import load_mae


@pytest.fixture(scope="module")
def served(demo_run):
    model, info, _ = load_mae(demo_run)
    return model, info


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "I;16", "CMYK", "LA"])
def test_any_mode_becomes_model_input(served, mode):
    _, info = served
    img = _photo(50, 40).convert(mode) if mode != "I;16" else Image.fromarray(
        np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30)
    x = load_upload(_encode(img, "TIFF" if mode in ("CMYK", "I;16") else "PNG"), info)
    assert x.shape == (info.channels, *info.img_size) and x.dtype == torch.float32


def test_same_pixels_as_the_evaluation_transform(served, tmp_path):
    _, info = served
    path = tmp_path / "a.png"
    _photo(60, 45, seed=1).save(path)
    expected = eval_transform(info)(load_image(path, info.channels))
    assert torch.allclose(load_upload(path, info), expected)


def test_large_upload_is_shrunk_before_conversion(served):
    _, info = served
    big = _photo(1200, 900, seed=2)
    x = load_upload(_encode(big), info)
    assert x.shape == (info.channels, *info.img_size)
    # Shrinking first (to 4x the input size) must not visibly change the result.
    reference = eval_transform(info)(torch.from_numpy(np.array(big.convert("L")))[None])
    assert (x - reference).abs().mean() < 0.05


def test_pixel_limit_is_checked_from_the_header(served):
    _, info = served
    photo = _photo(2000, 1600, seed=3)
    with pytest.raises(ImageTooLarge, match="2000 x 1600 pixels"):
        load_upload(_encode(photo, "PNG"), info, max_pixels=200_000)
    # A JPEG is decoded at a reduced scale (1/8 here), so the same limit admits it.
    x = load_upload(_encode(photo, "JPEG"), info, max_pixels=200_000)
    assert x.shape == (info.channels, *info.img_size)


@pytest.mark.parametrize("payload", [b"this is not an image\n", b"", _encode(_photo(40, 40))[:200]])
def test_unreadable_upload_is_a_clear_error(served, payload):
    _, info = served
    with pytest.raises(ValueError, match="not a readable image"):
        load_upload(payload, info)


def test_reconstruction_outputs(served):
    model, info = served
    x = load_upload(_encode(_photo(64, 64, seed=4)), info)
    result = run_pipeline(model, info, x, 0.5, "random", seed=3)
    shapes = {a.shape for a in (result.original, result.masked, result.reconstruction, result.pasted,
                                result.error_map, result.attention_map)}
    assert shapes == {(224, 224, 3)}  # 32 px enlarged 7x, no interpolation
    assert result.num_patches == 16 and result.num_masked == 8
    assert np.isfinite(result.mask_mse) and result.mask_mse > 0
    assert "true* patch" in result.explanation and "normalization" in result.explanation
    # Visible patches are pasted back unchanged; masked ones come from the reconstruction.
    same = np.all(result.pasted == result.original, axis=(2,)).reshape(4, 56, 4, 56).all(axis=(1, 3))
    recon = np.all(result.pasted == result.reconstruction, axis=(2,)).reshape(4, 56, 4, 56).all(axis=(1, 3))
    assert same.sum() >= 8 and (same | recon).all()


def test_seed_and_ratio_control_the_mask(served):
    model, info = served
    x = load_upload(_encode(_photo(32, 32, seed=5)), info)
    a, b = run_pipeline(model, info, x, 0.75, "random", 7), run_pipeline(model, info, x, 0.75, "random", 7)
    assert np.array_equal(a.masked, b.masked) and a.mask_mse == b.mask_mse
    c = run_pipeline(model, info, x, 0.75, "random", 8)
    assert not np.array_equal(a.masked, c.masked)
    assert run_pipeline(model, info, x, 0.25, "random", 7).num_masked == 4
    assert run_pipeline(model, info, x, 0.25, "grid", 7).mask_ratio == 0.75
    with pytest.raises(ValueError, match="strategy"):
        run_pipeline(model, info, x, 0.5, "spiral", 0)


def test_concurrent_requests_do_not_mix(served):
    model, info = served
    inputs = [(load_upload(_encode(_photo(32, 32, seed=s)), info), r, s)
              for s, r in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 0.9)]]
    sequential = [run_pipeline(model, info, x, r, "random", s) for x, r, s in inputs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda a: run_pipeline(model, info, *a[:2], "random", a[2]), inputs * 3))
    for i, result in enumerate(parallel):
        want = sequential[i % 4]
        assert np.array_equal(result.reconstruction, want.reconstruction) and result.mask_mse == want.mask_mse


def test_cls_attention_matches_timm_block(served):
    model, _info = served
    block = model.blocks[-1]
    x = torch.randn(2, 9, model.config.embed_dim, generator=torch.Generator().manual_seed(0))
    captured = {}
    block.attn.fused_attn = False  # the unfused path materializes the weights the hook can see
    handle = block.attn.attn_drop.register_forward_hook(lambda m, i, o: captured.setdefault("attn", o))
    try:
        block(x)
    finally:
        handle.remove()
        block.attn.fused_attn = True
    expected = captured["attn"][:, :, 0, :].mean(1)  # (B, N): cls row, mean over heads
    assert torch.allclose(block_cls_attention(block, x), expected, atol=1e-6)


def test_attention_map_covers_visible_patches_only(served):
    model, _info = served
    imgs = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1.0, 0.0] * 8])
    attn = cls_attention_map(model, imgs, mask_from_binary(mask))
    assert attn.shape == (1, 16) and torch.all(attn[mask.bool()] == 0)
    assert torch.all(attn[~mask.bool()] > 0) and torch.isclose(attn.sum(), torch.tensor(1.0))


def test_exif_rotation_is_applied(served):
    _, info = served
    img = Image.new("L", (64, 32), 0)
    img.paste(255, (0, 0, 32, 32))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    x = load_upload(buf.getvalue(), info)  # upright: 32 wide, 64 tall, white on top
    assert x[0, :8].mean() > x[0, -8:].mean() + 1.0
