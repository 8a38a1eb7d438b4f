"""pretrain --device-augment: uint8 crops in the loader, flip + normalization on the device in batch."""

from __future__ import annotations

import json

import torch

from maelab.cli import main
from maelab.data import DataConfig, dataset_info, eval_transform
from maelab.data.transforms import batch_flip_normalize, pretrain_crop_uint8


def test_batch_flip_normalize_equals_the_loader_transform():
    info = dataset_info(DataConfig(dataset="synthetic", channels=3))
    imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    reference = torch.stack([eval_transform(info)(img) for img in imgs])  # no resize at the native size
    flip = torch.tensor([False, True, False, True])
    got = batch_flip_normalize(imgs, info.mean, info.std, flip)
    torch.testing.assert_close(got[~flip], reference[~flip])
    torch.testing.assert_close(got[flip], reference[flip].flip(-1))
    crop = pretrain_crop_uint8(info)(imgs[0])
    assert crop.dtype == torch.uint8 and crop.shape == (3, 32, 32)


def test_pretrain_with_device_augment_runs(tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
                 "--batch-size", "16", "--epochs", "1", "--device-augment", "--output-dir", str(out)]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "epoch" and records[-1]["loss"] > 0
