"""The torchvision JPEG fast path in load_image gives PIL's pixels and PIL's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.data.images import DECODE_ERRORS, _decode_jpeg_rgb, load_image


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
