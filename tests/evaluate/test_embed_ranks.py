"""``maelab embed`` under torchrun: blocks per rank, gathered by rank 0 in the images' order; 2 Gloo ranks on CPU
write the matrix and index of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maelab.data import DataConfig, dataset_info, eval_transform
from maelab.evaluate.embed import embed_images, read_matrix
from maelab.evaluate.embed_ranks import RankPart, embed_block, merge_parts, shard_range
from maelab.evaluate.image_index import image_sets

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize("count", [0, 1, 5, 7, 8, 33])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_blocks_cover_every_image_once_in_order(count, world):
    blocks = [shard_range(count, rank, world) for rank in range(world)]
    assert [i for block in blocks for i in block] == list(range(count))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_merging_parts_restores_the_order():
    feats = torch.arange(10.0).view(10, 1)
    keep = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    labels = torch.arange(10)
    parts = []
    for block in (shard_range(10, r, 3) for r in range(3)):
        rows = torch.tensor(list(block))
        parts.append(RankPart(feats[rows][keep[rows]], keep[rows], labels[rows], (f"bad{block.start}",)))
    whole = merge_parts(parts)
    assert torch.equal(whole.features, feats[keep]) and torch.equal(whole.keep, keep)
    assert torch.equal(whole.labels, labels) and whole.skipped == ("bad0", "bad4", "bad7")


@pytest.fixture
def broken_folder(photo_folder_with):
    """cats/ and dogs/ with three readable PNGs each and one broken file each: one in each rank's half."""
    return photo_folder_with("2b.png")  # the last file of its block


def test_blocks_of_a_folder_with_broken_files_equal_one_pass(broken_folder):
    """Without processes: the blocks two ranks would embed, merged, are the one-process result."""
    data = DataConfig(dataset="folder", data=broken_folder, img_size=16, channels=1, max_bad_fraction=0.5)
    info = dataset_info(data)
    encode = lambda imgs: imgs.flatten(1)[:, :5] * 2  # noqa: E731 (a deterministic stand-in encoder)
    whole = embed_images(encode, image_sets(data, info, eval_transform(info), "all"), 3, torch.device("cpu"))
    [images] = image_sets(data, info, eval_transform(info), "all")  # fresh marks, as in another process
    parts = [embed_block(encode, images, shard_range(len(images.dataset), r, 2), 3, torch.device("cpu"))
             for r in range(2)]
    assert parts[0].skipped == (str(broken_folder / "cats" / "1b.png"),)
    merged = merge_parts(parts)
    assert torch.equal(merged.features, whole.features) and int(merged.keep.sum()) == len(whole.rows) == 6
    assert set(merged.skipped) == set(whole.skipped)


def _embed(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, "-m", "maelab", "embed", *args] if nproc > 1 else [sys.executable, "-m", "maelab", "embed", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow  # three interpreter launches, two under torchrun: ~1 min on an idle 2-core machine
def test_two_gloo_ranks_write_the_one_process_matrix(pretrained_run, broken_folder, tmp_path):
    outs = {n: tmp_path / f"p{n}" / "photos.safetensors" for n in (1, 2)}
    for nproc, out in outs.items():
        out.parent.mkdir()
        args = [str(pretrained_run), "--dataset", "folder", "--data", str(broken_folder), "--max-bad-fraction", "0.5",
                "--batch-size", "2", "--device", "cpu", "-o", str(out)]
        result = _embed(args, nproc)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stderr
    one, two = outs[1], outs[2]
    torch.testing.assert_close(read_matrix(two), read_matrix(one), atol=1e-6, rtol=1e-6)
    assert two.with_suffix(".csv").read_text() == one.with_suffix(".csv").read_text()
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (one, two))
    assert sorted(a["skipped_file_names"]) == sorted(b["skipped_file_names"]) and len(a["skipped_file_names"]) == 2
    assert sorted(p.name for p in two.parent.iterdir()) == ["photos.csv", "photos.json", "photos.safetensors"]
    # Too many broken files for the allowed fraction: every rank stops, nothing is written.
    strict = tmp_path / "strict" / "e.safetensors"
    result = _embed([str(pretrained_run), "--dataset", "folder", "--data", str(broken_folder), "--device", "cpu",
                     "-o", str(strict)], 2)
    assert result.returncode != 0 and "--max-bad-fraction" in result.stderr
    assert not strict.parent.exists() or not list(strict.parent.iterdir())
