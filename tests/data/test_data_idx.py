"""IDX reader/writer: round trips and clear errors on corrupt files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from maelab.data.idx import IDXFormatError, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([7, 0, 255], dtype=np.uint8),
        np.array([[-5, 40000], [3, -70000]], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ],
)
def test_round_trip(tmp_path: Path, name: str, array: np.ndarray) -> None:
    path = write_idx(tmp_path / name, array)
    back = read_idx(path)
    assert back.shape == array.shape
    assert back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint8)
    plain = write_idx(tmp_path / "a.idx", array)
    misnamed = tmp_path / "b.idx"
    misnamed.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(read_idx(misnamed), array)


def test_header_is_big_endian(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "a.idx", np.zeros((300, 2), np.uint8)).read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert raw[4:12] == (300).to_bytes(4, "big") + (2).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
        (b"\x00\x00\x42\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
        (b"\x00\x00\x08\x03" + (3).to_bytes(4, "big"), "dimension header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", "truncated"),
        (b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"abc", "trailing"),
    ],
)
def test_corrupt_bytes(raw: bytes, message: str) -> None:
    with pytest.raises(IDXFormatError, match=message):
        parse_idx(raw)


def test_truncated_file_names_path_and_fix(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t.idx", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IDXFormatError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert "Re-download" in str(info.value)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t.idx.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(IDXFormatError, match="gzip"):
        read_idx(path)


def test_corrupt_error_is_a_value_error() -> None:
    # The CLI reports ValueErrors as user errors; IDX problems must be among them.
    assert issubclass(IDXFormatError, ValueError)


def test_writer_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert to"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.uint16))
