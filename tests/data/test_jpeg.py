"""JPEG decoding through TorchCodec (the ``torchcodec`` extra, part of the test extras) with torchvision as the
fallback: the same pixels either way on the CPU, and a missing TorchCodec breaks nothing."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.data import DataConfig, dataset_info
from maelab.data.encoded_folder import build_encoded_folder, collate_encoded
from maelab.data.images import load_image
from maelab.data.jpeg import TORCHVISION, file_bytes, jpeg_decoder
from maelab.train.device_decode import DeviceDecoder
from maelab.train.environment import Environment
from maelab.train.loader import make_loader_fn

CPU = torch.device("cpu")


def jpegs(n: int = 24) -> list[torch.Tensor]:
    """``n`` JPEGs' bytes: RGB with each chroma subsampling, gray, baseline and progressive, varied sizes."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        size = (int(rng.integers(5, 70)), int(rng.integers(5, 70)))
        img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
        options = dict(quality=int(rng.integers(30, 100)), progressive=bool(i % 2))
        if i % 4 == 0:
            img = img.convert("L")
        else:
            options["subsampling"] = i % 3  # 4:4:4, 4:2:2, 4:2:0
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", **options)
        out.append(torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8))
    return out


def test_torchcodec_is_chosen_and_decodes_torchvisions_pixels():
    pytest.importorskip("torchcodec.decoders")
    codec = jpeg_decoder(CPU)
    assert codec.library == "torchcodec"
    data = jpegs()
    for channels in (1, 3, None):
        for one in data:
            assert torch.equal(codec(one, channels, CPU), TORCHVISION(one, channels, CPU))
        batch = codec(data, channels, CPU)  # one call for the list, as the device decoder makes it
        assert isinstance(batch, list)
        assert all(torch.equal(a, TORCHVISION(b, channels, CPU)) for a, b in zip(batch, data))
    broken = data[1][:len(data[1]) // 2]
    for decoder in (codec, TORCHVISION):  # a broken file raises the same error type from both
        with pytest.raises(RuntimeError):
            decoder(broken, 3, CPU)
        with pytest.raises(RuntimeError):
            decoder([data[0], broken], 3, CPU)


def test_decode_on_device_gives_the_same_batches_with_either_library(tmp_path):
    pytest.importorskip("torchcodec.decoders")
    for i, data in enumerate(jpegs(14)):
        path = tmp_path / "train" / "ab"[i % 2] / f"img_{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.numpy().tobytes())
    cfg = DataConfig(dataset="folder", data=tmp_path, img_size=16)
    info = dataset_info(cfg)
    dataset = build_encoded_folder(cfg, info)
    batches = list(make_loader_fn(dataset, 4, 0, Environment(CPU), 0, collate_encoded)(0))
    codec, fallback = DeviceDecoder(dataset, info, CPU), DeviceDecoder(dataset, info, CPU, TORCHVISION)
    assert codec.decode.library == "torchcodec"
    for batch in batches:
        assert torch.equal(codec(batch), fallback(batch))
    path = dataset.path(0)
    assert torch.equal(file_bytes(path), torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8))


def test_without_torchcodec_torchvision_decodes(tmp_path):
    """TorchCodec missing (its import blocked in a fresh process): the decoders fall back, loading still works."""
    path = tmp_path / "a.jpg"
    path.write_bytes(jpegs(2)[1].numpy().tobytes())
    code = ("import sys; sys.modules['torchcodec'] = None\n"
            "import torch\n"
            "from maelab.data.images import load_image\n"
            "from maelab.data.jpeg import jpeg_decoder\n"
            "assert jpeg_decoder(torch.device('cpu')).library == 'torchvision'\n"
            f"torch.save(load_image({str(path)!r}, 3), {str(tmp_path / 'pixels.pt')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "pixels.pt"), load_image(path, 3))  # the same pixels as here
