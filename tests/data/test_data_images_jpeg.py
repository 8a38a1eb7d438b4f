"""The torchvision JPEG fast path in load_image gives PIL's pixels and PIL's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.data.images import DECODE_ERRORS, _decode_jpeg_rgb, load_image, read_jpeg_undecoded


def _pil_rgb(path) -> torch.Tensor:
    with Image.open(path) as img:
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_matches_pil(tmp_path, mode):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)).resize((100, 75))
    path = tmp_path / "x.jpg"
    base.convert(mode).save(path, quality=90)
    got = load_image(path, 3)
    assert got.dtype == torch.uint8 and got.shape == (3, 75, 100)
    assert torch.equal(got, _pil_rgb(path))
    # CMYK is left to PIL's colour conversion; RGB and gray take the fast path.
    assert (_decode_jpeg_rgb(path) is None) == (mode == "CMYK")


def test_broken_jpeg_raises_a_decode_error(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DECODE_ERRORS):
        load_image(path, 3)


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG")])
def test_read_jpeg_undecoded_gives_bytes_and_size_of_rgb_and_gray_jpegs_only(tmp_path, mode, fmt):
    path = tmp_path / "x.img"
    Image.new(mode, (30, 20)).save(path, format=fmt)
    got = read_jpeg_undecoded(path)
    if (mode, fmt) in (("RGB", "JPEG"), ("L", "JPEG")):
        data, size = got
        assert size == (20, 30) and torch.equal(data, torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8))
    else:
        assert got is None  # decoded by load_image (PNG; CMYK: PIL's colour conversion)


def test_read_jpeg_undecoded_refuses_an_unreadable_header(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DECODE_ERRORS):
        read_jpeg_undecoded(path)
