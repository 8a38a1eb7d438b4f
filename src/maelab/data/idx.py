"""Reader and writer for the IDX format used by (Fashion-)MNIST.

Layout: 2 zero bytes, 1 byte element type, 1 byte number of dimensions, one
big-endian uint32 per dimension, then the row-major payload (big-endian).
Files may be gzip-compressed; compression is detected from the content, not
the file name, so a mis-named file still loads.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 4

# Element type code -> big-endian numpy dtype, as defined by the IDX spec.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_TO_CODE: dict[tuple[str, int], int] = {(d.kind, d.itemsize): c for c, d in _CODE_TO_DTYPE.items()}


class IDXFormatError(ValueError):
    """The bytes are not a valid (complete) IDX file."""


def read_idx(path: str | Path) -> np.ndarray:
    """Load an IDX file (plain or gzip) into a native-endian numpy array.

    Returns:
        array with the shape stored in the header, e.g. (N, 28, 28) uint8 for
        images or (N,) uint8 for labels.

    Raises:
        FileNotFoundError: the file does not exist.
        IDXFormatError: wrong magic number, truncated or oversized payload.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _error(path, f"the gzip stream is corrupt or truncated ({exc})") from exc
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an uncompressed IDX byte string; see :func:`read_idx`."""
    if len(raw) < _HEADER_BYTES:
        raise _error(source, f"only {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in _CODE_TO_DTYPE or ndim == 0:
        raise _error(source, f"bad magic number 0x{raw[:4].hex()} (expected 0x0000TTNN)")
    header_end = _HEADER_BYTES + 4 * ndim
    if len(raw) < header_end:
        raise _error(source, "truncated inside the dimension header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=_HEADER_BYTES))
    dtype = _CODE_TO_DTYPE[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header_end
    if actual < expected:
        raise _error(source, f"truncated: header promises {expected} payload bytes, found {actual}")
    if actual > expected:
        raise _error(source, f"{actual - expected} unexpected trailing bytes after the payload")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header_end)
    # Copy even for uint8: frombuffer over bytes is read-only, and torch.from_numpy
    # warns on (and must not write through) read-only arrays.
    native = data.astype(dtype.newbyteorder("="), copy=True)
    return native.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX; gzip-compressed when ``path`` ends in ``.gz``.

    Used by tests and for exporting small datasets; any shape with 1..255 dims.
    """
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _KIND_TO_CODE or not 1 <= array.ndim <= 255:
        raise ValueError(
            f"cannot store dtype {array.dtype} with {array.ndim} dims in IDX; "
            "convert to uint8/int8/int16/int32/float32/float64 with 1..255 dims"
        )
    code = _KIND_TO_CODE[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code]).tobytes()
    blob = header + payload
    if path.suffix == ".gz":
        blob = gzip.compress(blob, compresslevel=6)
    path.write_bytes(blob)
    return path


def _error(source: str | Path, problem: str) -> IDXFormatError:
    return IDXFormatError(
        f"{source}: not a valid IDX file: {problem}. "
        "Re-download or re-extract the file (or delete it to let maelab fetch a fresh copy)."
    )
