"""Transforms: shapes, dtypes, channel matching and normalization."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from maelab.data import (
    DataConfig,
    DatasetInfo,
    MatchChannels,
    build_dataset,
    dataset_info,
    eval_transform,
    pretrain_transform,
)
from maelab.data.fashion_mnist import MEAN, STD, SYSTEM_DIRS, find_split_files

HAVE_REAL = all(find_split_files(SYSTEM_DIRS[0], split) is not None for split in ("train", "test"))


def _info(channels: int = 1, size: int = 28) -> DatasetInfo:
    return DatasetInfo("t", channels, (size, size), (0.5,) * channels, (0.25,) * channels, 0, ())


@pytest.mark.parametrize("make", [pretrain_transform, eval_transform])
@pytest.mark.parametrize(("c_in", "channels", "size"), [(1, 1, 28), (1, 3, 32), (3, 1, 16), (3, 3, 224)])
def test_output_shape_and_dtype(make: Callable, c_in: int, channels: int, size: int) -> None:
    image = torch.randint(0, 256, (c_in, 30, 40), dtype=torch.uint8)
    out = make(_info(channels, size))(image)
    assert out.shape == (channels, size, size) and out.dtype == torch.float32
    assert image.dtype == torch.uint8  # input untouched


def test_eval_is_deterministic_and_normalizes() -> None:
    image = torch.full((1, 28, 28), 191, dtype=torch.uint8)
    out = eval_transform(_info())(image)
    assert torch.allclose(out, torch.full_like(out, (191 / 255 - 0.5) / 0.25))
    assert torch.equal(out, eval_transform(_info())(image))


def test_eval_resizes_shorter_side_and_center_crops() -> None:
    image = torch.zeros((1, 20, 40), dtype=torch.uint8)
    image[:, :, 10:30] = 255  # bright middle half: the centre crop keeps only bright pixels
    out = eval_transform(_info(size=10))(image)
    assert out.shape == (1, 10, 10)
    # Squashing instead of cropping would leave dark (-2) columns; only bicubic edge blur remains.
    assert torch.allclose(out[:, :, 1:-1], torch.full_like(out[:, :, 1:-1], 2.0), atol=0.05)
    assert out.min() > 1.5


def test_pretrain_is_random() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    transform = pretrain_transform(_info())
    outs = [transform(image) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_match_channels() -> None:
    gray = torch.randint(0, 256, (1, 5, 5), dtype=torch.uint8)
    rgb = MatchChannels(3)(gray)
    assert rgb.shape == (3, 5, 5) and all(torch.equal(rgb[c], gray[0]) for c in range(3))
    colour = torch.zeros((3, 2, 2), dtype=torch.uint8)
    colour[1] = 255  # pure green -> luma 0.587 * 255
    luma = MatchChannels(1)(colour)
    assert luma.shape == (1, 2, 2) and luma.dtype == torch.uint8 and abs(int(luma[0, 0, 0]) - 150) <= 1
    with pytest.raises(ValueError, match="set channels"):
        MatchChannels(3)(torch.zeros((2, 4, 4), dtype=torch.uint8))


def test_fashion_eval_batch_is_centered(isolated: Path, fake_fashion: Callable[..., Path]) -> None:
    # Fake data is uniform noise; its stats go in a custom info so the check is exact.
    root = fake_fashion(isolated / "fm", n_train=64)
    cfg = DataConfig(data=root, download=False)
    noise_info = DatasetInfo("fashion_mnist", 1, (28, 28), (0.5,), (0.2887,), 10, dataset_info(cfg).class_names)
    ds = build_dataset(cfg, "train", eval_transform(noise_info))
    batch = torch.stack([ds[i][0] for i in range(len(ds))])
    assert abs(batch.mean().item()) < 0.02 and abs(batch.std().item() - 1) < 0.02


@pytest.mark.skipif(not HAVE_REAL, reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_eval_batch_is_normalized() -> None:
    cfg = DataConfig(download=False)
    info = dataset_info(cfg)
    assert (info.mean, info.std) == (MEAN, STD)
    ds = build_dataset(cfg, "test", eval_transform(info))
    batch = torch.stack([ds[i][0] for i in range(0, len(ds), 10)])  # 1000 images
    assert batch.shape == (1000, 1, 28, 28)
    assert abs(batch.mean().item()) < 0.05 and abs(batch.std().item() - 1) < 0.05
    pre = build_dataset(cfg, "test", pretrain_transform(info))[0][0]
    assert pre.shape == (1, 28, 28) and pre.dtype == torch.float32


# ---------------------------------------------------------------- augmentation ablation (paper Table 1e)
def _pattern(size: int = 28) -> torch.Tensor:
    # Distinct pixel values so any crop, flip or resize is visible in the output.
    return torch.arange(size * size, dtype=torch.float32).view(1, size, size).mul(255 / (size * size)).to(torch.uint8)


@pytest.mark.parametrize("augment", ["none", "fixed_crop", "random_resized_crop", "crop_jitter"])
@pytest.mark.parametrize(("c_in", "channels", "size"), [(1, 1, 28), (3, 3, 32), (3, 1, 16)])
def test_every_augment_gives_model_shaped_floats(augment: str, c_in: int, channels: int, size: int) -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (c_in, 30, 40), dtype=torch.uint8)
    out = pretrain_transform(_info(channels, size), augment)(image)
    assert out.shape == (channels, size, size) and out.dtype == torch.float32


def test_augment_none_is_the_eval_transform() -> None:
    image = torch.randint(0, 256, (1, 30, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    transform = pretrain_transform(_info(), "none")
    outs = [transform(image) for _ in range(3)]
    assert all(torch.equal(o, eval_transform(_info())(image)) for o in outs)


def test_fixed_crop_is_a_translated_window_of_the_resized_image() -> None:
    torch.manual_seed(0)
    image = _pattern(28)
    info = _info(size=28)
    transform = pretrain_transform(info, "fixed_crop")
    # The same resize the transform applies (28 / 0.875 = 32), then every 28x28 window and its mirror.
    from torchvision.transforms import v2

    big = v2.Resize(32, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(image)
    windows = [big[:, y:y + 28, x:x + 28] for y in range(5) for x in range(5)]
    def normalize(w: torch.Tensor) -> torch.Tensor:
        return (w.float() / 255 - 0.5) / 0.25

    candidates = [normalize(w) for w in windows] + [normalize(w.flip(-1)) for w in windows]
    outs = [transform(image) for _ in range(12)]
    for out in outs:
        assert any(torch.allclose(out, c, atol=1e-6) for c in candidates)
    assert len({tuple(o.flatten()[:40].tolist()) for o in outs}) > 1  # random position / flip


def test_random_resized_crop_changes_scale_but_fixed_crop_does_not() -> None:
    # A centred bright square: random-size crops zoom, so its area in the output varies a lot;
    # fixed-size crops only shift it (and flip), so its area stays the same up to edge blur.
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[:, 10:18, 10:18] = 255
    torch.manual_seed(1)

    def areas(augment: str) -> list[float]:
        transform = pretrain_transform(_info(), augment)
        return [float((transform(image) > 0).float().sum()) for _ in range(20)]

    fixed, rrc = areas("fixed_crop"), areas("random_resized_crop")
    assert max(fixed) - min(fixed) <= 8
    assert max(rrc) - min(rrc) > 40


def test_crop_jitter_changes_intensities_beyond_geometry() -> None:
    # A constant image is unchanged by any crop or flip; only the jitter can move its value.
    image = torch.full((1, 28, 28), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    plain = [pretrain_transform(_info(), "random_resized_crop")(image) for _ in range(5)]
    jittered = [pretrain_transform(_info(), "crop_jitter")(image) for _ in range(10)]
    assert all(torch.equal(p, plain[0]) for p in plain)
    assert len({round(float(j.mean()), 4) for j in jittered}) > 3


def test_unknown_augment_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown augment"):
        DataConfig(augment="mixup")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown augmentation"):
        pretrain_transform(_info(), "mixup")
