"""maelab shard + ShardDataset: every image exactly once per epoch across 2 ranks x 2 workers, bytes intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from maelab.cli import main
from maelab.data.shards import ShardDataset, _candidates, _Lookahead, read_index


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    pixels = {}
    for split, count in (("train", 23), ("test", 5)):
        for i in range(count):
            cls = "cat" if i % 3 else "dog"
            path = root / split / cls / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            array = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
            Image.fromarray(array).save(path)
            pixels[(split, cls, i)] = array
    return root, pixels


def test_shards_round_trip_once_per_epoch_across_ranks_and_workers(image_folder, tmp_path):
    root, pixels = image_folder
    out = tmp_path / "shards"
    assert main(["shard", str(root), str(out), "--max-per-shard", "3"]) == 0
    index = read_index(out)
    assert index["class_names"] == ["cat", "dog"]
    assert index["splits"]["train"]["images"] == 23 and len(index["splits"]["train"]["shards"]) == 8
    expected = sorted(a.tobytes() for (split, _, _), a in pixels.items() if split == "train")
    for epoch in range(2):
        seen, per_rank = [], []
        for rank in range(2):
            data = ShardDataset(out, "train", rank=rank, world_size=2, seed=5, with_keys=True)
            data.set_epoch(epoch)
            items = list(DataLoader(data, batch_size=None, num_workers=2))
            per_rank.append({key for _, _, key in items})
            seen += items
        keys = [key for _, _, key in seen]
        assert len(keys) == len(set(keys)) == 23  # exactly once
        assert not per_rank[0] & per_rank[1] and per_rank[0] and per_rank[1]
        # Decoded pixels are the originals, and labels follow the class folders.
        got = sorted(img.permute(1, 2, 0).numpy().tobytes() for img, _, _ in seen)
        assert got == expected
        assert sorted(label for _, label, _ in seen) == sorted(
            int(cls == "dog") for (split, cls, _) in pixels if split == "train")
        assert all(img.dtype == torch.uint8 and img.shape == (3, 8, 6) for img, _, _ in seen)
    orders = []
    for epoch in range(2):
        data = ShardDataset(out, "train", seed=5)
        data.set_epoch(epoch)
        orders.append(data.my_shards(0, 1))
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]


def test_shard_refuses_a_nonempty_output(image_folder, tmp_path):
    root, _ = image_folder
    out = tmp_path / "shards"
    out.mkdir()
    (out / "x").write_text("keep me")
    assert main(["shard", str(root), str(out)]) == 2
    assert (out / "x").read_text() == "keep me"
    with pytest.raises(ValueError, match="no shards.json"):
        ShardDataset(tmp_path, "train")


def test_a_broken_slot_looks_ahead_then_wraps_to_the_stream_start():
    made = []

    def stream():
        made.append(1)
        return iter("abcd")

    ahead = _Lookahead(stream)
    ahead.advance(1)  # "a" passed unread
    assert ahead.get(2) == "c" and ahead.get(4) is None
    assert list(_candidates(ahead, 2, stream)) == ["c", "d", "a", "b"]  # then the positions before slot 2
    ahead.advance(3)
    assert ahead.get(3) == "d" and list(_candidates(ahead, 3, stream)) == ["d", "a", "b", "c"]
    assert len(made) == 3  # one pass for the epoch, one per wrap-around
