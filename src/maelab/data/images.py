"""Decode image files of any common PIL mode into uint8 tensors with 1 or 3 channels.

Mode handling (the choices a user may care about):

* RGBA / LA / palette with transparency: composited on a white background,
  because transparent pixels often hold arbitrary colour (frequently black)
  and white is the usual backdrop of such images (icons, product shots).
* 16-bit and 32-bit integer grayscale (``I;16*``, ``I``): scaled from the
  16-bit range to 0..255 (PIL's own ``convert("L")`` clips instead, which
  turns most 16-bit images white).
* float (``F``): assumed to be in 0..255 and clipped.
* CMYK, YCbCr, LAB, HSV, 1-bit: PIL's standard conversion to RGB.
* 3 -> 1 channel uses PIL's ITU-R 601-2 luma (``convert("L")``).

A TIFF that Pillow cannot read (64-bit float or planar samples, for one) is read by the optional
``tifffile`` package when it is installed: its first page, see :func:`tiff_first_page`.

Files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, doubled) are
refused with :class:`ImageTooLarge` before any pixel is decoded.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maelab.data.jpeg import file_bytes, jpeg_decoder

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# What PIL raises for undecodable content: UnidentifiedImageError and "image file is
# truncated" are OSError, some plugins raise ValueError/SyntaxError on garbage headers.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)

_WHITE = (255, 255, 255, 255)


class ImageTooLarge(ValueError):
    """The file declares more pixels than Pillow's decompression-bomb guard allows."""


def is_image_file(path: Path) -> bool:
    """True when the suffix is a supported image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def load_image(path: Path, channels: int) -> torch.Tensor:
    """Decode ``path`` into a uint8 tensor (channels, H, W); ``channels`` is 1 or 3.

    Raises:
        one of ``DECODE_ERRORS`` when the file is not a decodable image.
    """
    assert channels in (1, 3), channels
    mode = "L" if channels == 1 else "RGB"
    try:
        # Opening reads the header only: Pillow's decompression-bomb guard applies to the fast JPEG path too.
        with _opened(path) as img:
            if channels == 3 and _torchvision_jpeg(img):
                fast = _decode_jpeg_rgb(path)
                if fast is not None:
                    return fast
            img.load()  # decode now so truncation surfaces here, inside the caller's try
            converted = to_mode(img, mode)
    except ImageTooLarge:
        raise
    except DECODE_ERRORS as exc:
        converted = to_mode(tiff_first_page(path, exc), mode)
    return _to_tensor(converted)


def read_jpeg_undecoded(path: Path) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """The file's bytes (N,) uint8 and its (height, width) when it is an RGB or gray JPEG, which
    ``decode_jpeg`` (:mod:`maelab.data.jpeg`) decodes as :func:`load_image` does; None for any other image (CMYK
    JPEGs included: PIL's colour conversion), which :func:`load_image` must decode.

    Only the header is parsed (PIL's lazy open), so a file whose header is fine but whose data is
    broken passes here and fails in ``decode_jpeg``.

    Raises:
        one of ``DECODE_ERRORS`` when the header is unreadable (:class:`ImageTooLarge` past the bomb guard).
    """
    with _opened(path) as img:
        if not _torchvision_jpeg(img):
            return None
        width, height = img.size
    return file_bytes(path), (height, width)


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` (header only), with Pillow's decompression-bomb error as :class:`ImageTooLarge`."""
    try:
        with Image.open(path) as img:
            yield img
    except Image.DecompressionBombError as exc:
        limit = Image.MAX_IMAGE_PIXELS * 2 if Image.MAX_IMAGE_PIXELS else 0
        raise ImageTooLarge(
            f"{path} declares more than {limit} pixels, Pillow's guard against decompression bombs ({exc}); "
            "downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted"
        ) from exc


def _torchvision_jpeg(img: Image.Image) -> bool:
    """A JPEG that libjpeg-turbo (torchvision) decodes to PIL's pixels: RGB or gray, not CMYK."""
    return img.format == "JPEG" and img.mode in ("RGB", "L")


def decode_image_bytes(data: bytes, channels: int | None) -> torch.Tensor:
    """Decode an image file held in memory (a shard member) into uint8 (channels, H, W) by the rules
    above, as :func:`load_image` does for files; ``channels`` None keeps the file's own channels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            converted = img if channels is None else to_mode(img, "L" if channels == 1 else "RGB")
            return _to_tensor(converted)
    except DECODE_ERRORS as exc:
        if isinstance(exc, Image.DecompressionBombError):
            raise
        page = tiff_first_page(io.BytesIO(data), exc)
        return _to_tensor(page if channels is None else to_mode(page, "L" if channels == 1 else "RGB"))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 (C, H, W) of an 8-bit PIL image (L, LA, RGB, RGBA...)."""
    array = np.array(img, dtype=np.uint8)  # copy: writable, independent of PIL
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little / big endian, classic / BigTIFF


def tiff_first_page(source: Path | io.BytesIO, error: BaseException) -> Image.Image:
    """The first page of a TIFF that Pillow cannot read (64-bit float or planar samples, say), as an 8-bit
    PIL image, through the optional ``tifffile`` package; raises ``error`` (what Pillow raised) when the
    data is no TIFF, tifffile is not installed or cannot read it either.

    Samples become 8-bit as Pillow's do: unsigned integers scaled from their range (16-bit: / 257),
    negative values clipped to 0; floats scaled from 0..1 when none exceeds 1 (the usual range of float
    images), else clipped to 0..255.
    """
    try:
        if isinstance(source, io.BytesIO):
            magic = source.getvalue()[:4]
        else:
            with open(source, "rb") as handle:
                magic = handle.read(4)
    except OSError:
        raise error from None
    if magic not in _TIFF_MAGIC:
        raise error
    try:
        import tifffile
    except ImportError:
        raise error from None
    quiet = logging.getLogger("tifffile")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its warnings about a broken file: Pillow's error says it already
    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            pixels = int(page.imagewidth) * int(page.imagelength)
            if Image.MAX_IMAGE_PIXELS and pixels > 2 * Image.MAX_IMAGE_PIXELS:
                raise ImageTooLarge(f"{source} declares {pixels} pixels, more than twice PIL.Image.MAX_IMAGE_PIXELS; "
                                    "downscale the image, or raise that limit if the file is trusted")
            array, axes, photometric = page.asarray(), page.axes, page.photometric
    except ImageTooLarge:
        raise
    except Exception:  # noqa: BLE001  anything tifffile (or a codec it lacks) raises: Pillow's error stands
        raise error from None
    finally:
        quiet.setLevel(level)
    if "S" in axes:  # samples last: (..., Y, X, S)
        array, axes = np.moveaxis(array, axes.index("S"), -1), axes.replace("S", "") + "S"
    while array.ndim > (3 if axes.endswith("S") else 2):  # pages inside the page (depth): the first
        array, axes = array[0], axes[1:]
    array = _to_uint8(array)
    samples = array.shape[2] if array.ndim == 3 else 1
    if samples == 1:
        return Image.fromarray(array.reshape(array.shape[:2]))
    if samples == 4 and photometric == tifffile.PHOTOMETRIC.SEPARATED:
        return Image.frombytes("CMYK", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
    if samples in (2, 3, 4):  # LA, RGB, RGBA (extra samples are alpha)
        return Image.fromarray(np.ascontiguousarray(array))
    raise error


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        top = float(np.iinfo(array.dtype).max)
        scaled = np.clip(array.astype(np.float64), 0, None) * (255.0 / top)
    else:
        values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scaled = values * 255.0 if values.size and values.max() <= 1.0 else values
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _decode_jpeg_rgb(path: Path) -> torch.Tensor | None:
    """(3, H, W) uint8 from libjpeg-turbo (TorchCodec's or torchvision's decoder, :mod:`maelab.data.jpeg`; about
    4x faster than PIL here, and pixel-identical for RGB and gray JPEGs); None for CMYK or undecodable files,
    which go through PIL (its colour conversion and its errors)."""
    cpu = torch.device("cpu")
    try:
        img = jpeg_decoder(cpu)(file_bytes(path), None, cpu)  # (C, H, W) uint8
    except RuntimeError:
        return None
    if img.shape[0] == 1:
        return img.expand(3, -1, -1).contiguous()  # (3, H, W), as PIL's L -> RGB
    return img if img.shape[0] == 3 else None


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert ``img`` to ``"L"`` or ``"RGB"`` following the rules in the module docstring."""
    assert mode in ("L", "RGB"), mode
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_to_l(img).convert(mode)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert(mode)
    if img.mode == mode:
        return img
    if mode == "L" and img.mode not in ("RGB", "1", "P"):
        # Go through RGB so CMYK/YCbCr/LAB get their proper colour conversion first.
        return img.convert("RGB").convert("L")
    return img.convert(mode)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    array = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(array, 0, 255)
    else:
        # 16-bit data (I;16 variants, and I from older Pillow 16-bit PNGs): 65535 -> 255.
        scaled = np.clip(array.astype(np.float64) / 257.0, 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))  # 2-D uint8 -> mode "L"
