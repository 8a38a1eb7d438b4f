"""Synthetic dataset: determinism, shapes, balance, and learnable structure."""

from __future__ import annotations

import pytest
import torch

from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform, synthetic


def _raw(cfg: DataConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = build_dataset(cfg, split, None)
    return ds.images, ds.labels


def test_deterministic_and_independent_of_global_rng() -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_size=64)
    torch.manual_seed(0)
    a = _raw(cfg, "train")
    before = torch.get_rng_state()
    torch.manual_seed(123)
    b = _raw(cfg, "train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(0)
    _raw(cfg, "train")
    assert torch.equal(torch.get_rng_state(), before)  # generation does not consume global RNG


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32])
def test_shapes(channels: int, size: int) -> None:
    cfg = DataConfig(dataset="synthetic", channels=channels, img_size=size, synthetic_size=40)
    info = dataset_info(cfg)
    assert (info.channels, info.img_size, info.num_classes) == (channels, (size, size), 4)
    assert len(info.mean) == channels and all(0.2 < s < 0.5 for s in info.std)
    train, test = build_dataset(cfg, "train", None), build_dataset(cfg, "test", None)
    assert (len(train), len(test)) == (40, 10)
    assert train.images.shape == (40, channels, size, size) and train.images.dtype == torch.uint8
    image, label = train[0]
    assert image.shape == (channels, size, size) and image.dtype == torch.float32
    assert 0 <= label < 4


def test_defaults() -> None:
    info = dataset_info(DataConfig(dataset="synthetic"))
    assert (info.channels, info.img_size) == (1, (32, 32))
    assert len(build_dataset(DataConfig(dataset="synthetic"), "train", None)) == 512


def test_classes_balanced_and_splits_disjoint() -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_size=402)
    train_x, train_y = _raw(cfg, "train")
    test_x, _ = _raw(cfg, "test")
    counts = torch.bincount(train_y, minlength=4)
    assert counts.max() - counts.min() <= 1
    flat_train = {bytes(x.numpy().tobytes()) for x in train_x}
    assert not any(bytes(x.numpy().tobytes()) in flat_train for x in test_x)
    assert len(flat_train) == len(train_x)


def test_stats_match_the_data() -> None:
    cfg = DataConfig(dataset="synthetic", channels=3, synthetic_size=256)
    info = dataset_info(cfg)
    images, _ = _raw(cfg, "train")
    pixels = images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(pixels.mean(1), torch.tensor(info.mean, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(pixels.std(1), torch.tensor(info.std, dtype=torch.float64), atol=1e-3)
    ds = build_dataset(cfg, "train", eval_transform(info))
    batch = torch.stack([ds[i][0] for i in range(64)])
    assert batch.mean().abs() < 0.2


def test_linear_classifier_beats_chance() -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_size=1024)
    train_x, train_y = _raw(cfg, "train")
    test_x, test_y = _raw(cfg, "test")

    def features(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).double() / 255
        return torch.cat([flat, torch.ones(len(flat), 1, dtype=torch.float64)], dim=1)

    a, targets = features(train_x), torch.nn.functional.one_hot(train_y, 4).double()
    weights = torch.linalg.solve(a.T @ a + torch.eye(a.shape[1], dtype=torch.float64), a.T @ targets)
    accuracy = (features(test_x) @ weights).argmax(1).eq(test_y).double().mean().item()
    assert accuracy > 0.6  # chance is 0.25


def test_generation_is_per_class_distinct() -> None:
    images, labels = synthetic.generate(400, 1, 32, seed=0)
    x = images.double() / 255
    row_var = x.var(dim=3).mean(dim=(1, 2))  # variation along a row: high for vertical stripes
    col_var = x.var(dim=2).mean(dim=(1, 2))
    assert (row_var[labels == 1] > col_var[labels == 1]).all()
    assert (col_var[labels == 0] > row_var[labels == 0]).all()
