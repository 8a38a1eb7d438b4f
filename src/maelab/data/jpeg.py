"""JPEG decoding that outlives torchvision's decoders: TorchCodec's when it is installed, torchvision's otherwise.

torchvision 0.29 deprecated its image decoders in favour of TorchCodec, which since 0.16 decodes JPEG on
the CPU (libjpeg-turbo) and on CUDA (nvJPEG, a batch per call), with the same call. It is an optional
extra (``pip install 'maelab[torchcodec]'``); without it, or where it cannot decode on the device (a
build without CUDA, a library that fails to load against this torch), torchvision's decoder serves.
On the CPU both give the same pixels (tests/data/test_jpeg.py), so which one ran never changes a run.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

logger = logging.getLogger(__name__)

JpegData = torch.Tensor | list[torch.Tensor]
"""A JPEG file's bytes as a 1-D uint8 CPU tensor, or a list of them (decoded in one call: one nvJPEG batch)."""
MODES = {1: "GRAY", 3: "RGB", None: "UNCHANGED"}


@dataclass(frozen=True)
class JpegDecoder:
    """One library's ``decode_jpeg``: ``decoder(data, channels, device)`` -> uint8 (C, H, W), or a list of them.

    ``channels`` is 1 (gray), 3 (RGB) or None (the file's own). A file that cannot be decoded raises
    RuntimeError (both libraries do); one broken file in a list fails the whole call.
    """

    library: str
    """"torchcodec" or "torchvision"."""
    decode: Callable[[JpegData, int | None, torch.device], JpegData]

    def __call__(self, data: JpegData, channels: int | None, device: torch.device) -> JpegData:
        return self.decode(data, channels, device)


def _torchcodec(data: JpegData, channels: int | None, device: torch.device) -> JpegData:
    from torchcodec.decoders import decode_jpeg as codec_decode_jpeg  # the optional extra: imported where used

    return codec_decode_jpeg(data, mode=MODES[channels], device=device)


def _torchvision(data: JpegData, channels: int | None, device: torch.device) -> JpegData:
    return decode_jpeg(data, mode=getattr(ImageReadMode, MODES[channels]), device=device)


TORCHVISION = JpegDecoder("torchvision", _torchvision)


@functools.cache
def jpeg_decoder(device: torch.device) -> JpegDecoder:
    """TorchCodec's decoder when it is installed and decodes a JPEG on ``device``, else torchvision's."""
    try:
        import torchcodec.decoders  # noqa: F401  (a failed load of its native library raises OSError or RuntimeError)
    except (ImportError, OSError, RuntimeError) as exc:
        if not isinstance(exc, ModuleNotFoundError):
            logger.warning("TorchCodec is installed but does not load (%s); decoding JPEGs with torchvision", exc)
        return TORCHVISION
    codec = JpegDecoder("torchcodec", _torchcodec)
    try:
        codec(_probe_jpeg(), 3, device)
    except RuntimeError as exc:
        logger.warning("TorchCodec cannot decode JPEGs on %s (%s); decoding them with torchvision", device, exc)
        return TORCHVISION
    return codec


def file_bytes(path: Path) -> torch.Tensor:
    """The bytes of ``path`` as a 1-D uint8 tensor: what the decoders take (torchvision's own ``read_file`` is
    deprecated with its decoders)."""
    return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)


def _probe_jpeg() -> torch.Tensor:
    """A tiny valid JPEG's bytes (N,) uint8: what :func:`jpeg_decoder` tries a library on."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, "JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
