"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def photo_folder_with(tmp_path) -> Callable[[str], Path]:
    """A factory: cats/ and dogs/ with three readable 20x24 PNGs each, an empty cats/1b.png, and a text file
    named ``dogs/<broken_dog>`` (where it sorts decides which block of a sharded pass meets it)."""

    def make(broken_dog: str) -> Path:
        root = tmp_path / "photos"
        for name in ("cats", "dogs"):
            (root / name).mkdir(parents=True)
            for i in range(3):
                pixels = np.random.default_rng(10 * len(name) + i).integers(0, 255, (20, 24, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / name / f"{i}.png")
        (root / "cats" / "1b.png").write_bytes(b"")
        (root / "dogs" / broken_dog).write_text("not an image\n")
        return root

    return make
