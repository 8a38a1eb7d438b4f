"""TIFFs that Pillow cannot identify (float, planar, multi-page) are read through the optional tifffile."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError

from maelab.data.images import decode_image_bytes, load_image

tifffile = pytest.importorskip("tifffile")


@pytest.fixture
def multipage_rgb() -> Path:
    """scikit-image's multipage_rgb.tif: two pages of 3 x 10 x 10 float64 samples in 0..1, stored planar."""
    skimage_data = Path(pytest.importorskip("skimage").__file__).parent / "data"
    path = skimage_data / "multipage_rgb.tif"
    if not path.is_file():
        pytest.skip("scikit-image ships without its data files here")
    return path


def test_first_page_of_a_float_planar_tiff(multipage_rgb):
    first = tifffile.imread(multipage_rgb, key=0)  # (3, 10, 10) float64 in 0..1
    expected = torch.from_numpy(np.rint(first * 255).astype(np.uint8))
    rgb = load_image(multipage_rgb, 3)
    assert rgb.dtype == torch.uint8 and torch.equal(rgb, expected)
    assert load_image(multipage_rgb, 1).shape == (1, 10, 10)
    assert torch.equal(decode_image_bytes(multipage_rgb.read_bytes(), 3), expected)  # a shard member


@pytest.mark.parametrize(("dtype", "scale"),
                         [(np.float32, 1.0), (np.uint32, 255 / 4294967295), (np.int16, 255 / 32767)])
def test_sample_ranges(tmp_path, dtype, scale):
    """Floats over 1 are taken as 0..255 and clipped; integers are scaled from their range, negatives clipped."""
    rng = np.random.default_rng(0)
    top = 300.0 if dtype == np.float32 else np.iinfo(dtype).max
    low = -50.0 if dtype != np.uint32 else 0.0
    pixels = rng.uniform(low, top, (2, 6, 4, 3)).astype(dtype)  # two RGB pages
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)
    expected = np.clip(np.rint(np.clip(pixels[0].astype(np.float64), 0, None) * scale), 0, 255)
    assert torch.equal(load_image(path, 3), torch.from_numpy(expected.astype(np.uint8)).permute(2, 0, 1))


def test_without_tifffile_the_file_is_undecodable_as_before(multipage_rgb, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import fails
    with pytest.raises(UnidentifiedImageError):
        load_image(multipage_rgb, 3)


def test_broken_tiffs_keep_pillows_error(tmp_path):
    for i, data in enumerate((b"II*\0" + bytes(40), b"MM\0*garbage")):
        path = tmp_path / f"broken{i}.tif"
        path.write_bytes(data)
        with pytest.raises(UnidentifiedImageError):
            load_image(path, 3)
