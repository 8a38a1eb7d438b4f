"""Image folder dataset: modes, classes, splits, stats override and broken files."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.data import DataConfig, build_dataset, dataset_info
from maelab.data import folder as folder_mod
from maelab.data.images import load_image

MODES = ("RGB", "L", "RGBA", "P", "I;16", "CMYK")


def make_image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A small random image in ``mode`` (size is (W, H))."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return rgb.convert(mode)


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.mode == "CMYK":  # PNG cannot store CMYK
        path = path.with_suffix(".tif")
    img.save(path, format="TIFF" if img.mode == "CMYK" else "PNG")
    return path


def make_tree(root: Path, classes: tuple[str, ...] | None, n: int = 36) -> list[Path]:
    """``n`` images of mixed modes and sizes, in class folders or flat (nested)."""
    paths = []
    for i in range(n):
        mode = MODES[i % len(MODES)]
        size = (20 + 3 * (i % 5), 16 + 2 * (i % 7))
        sub = Path(classes[i % len(classes)]) if classes else Path("nested" if i % 2 else ".")
        paths.append(save(make_image(mode, size, i), root / sub / f"img_{i:03d}.PNG"))
    return paths


def add_bad_files(root: Path) -> list[Path]:
    """Zero-byte file, text named .png and a truncated PNG, all inside class ``a``."""
    (root / "a").mkdir(parents=True, exist_ok=True)
    zero = root / "a" / "zero.png"
    zero.write_bytes(b"")
    text = root / "a" / "text.png"
    text.write_text("definitely not an image\n")
    buf = io.BytesIO()
    make_image("RGB", (64, 64), 99).save(buf, format="PNG")
    truncated = root / "a" / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return [zero, text, truncated]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_load_image_modes(tmp_path: Path, mode: str, channels: int) -> None:
    path = save(make_image(mode, (21, 13), 0), tmp_path / "x.png")
    with Image.open(path) as img:
        assert img.mode == mode  # the test really covers this mode
    tensor = load_image(path, channels)
    assert tensor.shape == (channels, 13, 21) and tensor.dtype == torch.uint8


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert load_image(path, 3).eq(255).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)).save(path)  # 128 * 257
    assert load_image(path, 1).eq(128).all()


def test_labeled_tree(tmp_path: Path) -> None:
    make_tree(tmp_path, classes=("dog", "cat", "bird"))
    cfg = DataConfig(dataset="folder", data=tmp_path, img_size=16)
    info = dataset_info(cfg)
    assert info.class_names == ("bird", "cat", "dog") and info.num_classes == 3
    assert (info.mean, info.std) == (folder_mod.IMAGENET_MEAN, folder_mod.IMAGENET_STD)
    train, test = build_dataset(cfg, "train", None), build_dataset(cfg, "test", None)
    assert len(train) + len(test) == 36 and len(test) > 0
    for ds in (train, test):
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            expected = info.class_names.index(Path(ds._paths[i]).parent.name)
            assert label == expected
    assert not set(train._paths) & set(test._paths)


def test_hash_split_is_stable(tmp_path: Path) -> None:
    make_tree(tmp_path, classes=None)
    cfg = DataConfig(dataset="folder", data=tmp_path, channels=1, img_size=8)
    first = build_dataset(cfg, "test", None)._paths.tolist()
    assert first == build_dataset(cfg, "test", None)._paths.tolist()
    # Pinned hash: the split must not change between versions, runs or machines.
    assert folder_mod.is_test_file(Path("nested/img_001.PNG")) is False
    assert [i for i in range(40) if folder_mod.is_test_file(Path(f"x/{i}.png"))] == [4, 5, 13, 17, 19]
    share = sum(folder_mod.is_test_file(Path(f"c/{i}.jpg")) for i in range(4000)) / 4000
    assert 0.08 < share < 0.12


def test_unlabeled_tree(tmp_path: Path) -> None:
    make_tree(tmp_path, classes=None)
    cfg = DataConfig(dataset="folder", data=tmp_path, channels=1, img_size=8)
    info = dataset_info(cfg)
    assert (info.num_classes, info.class_names, info.mean, info.std) == (0, (), (0.5,), (0.5,))
    ds = build_dataset(cfg, "train", None)
    assert ds.labels.eq(-1).all()
    image, label = ds[0]
    assert image.shape == (1, 8, 8) and label == -1


def test_explicit_splits_and_stats_file(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", classes=("x", "y"), n=6)
    make_tree(tmp_path / "val", classes=("y",), n=3)
    (tmp_path / "maelab_stats.json").write_text(json.dumps({"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}))
    cfg = DataConfig(dataset="folder", data=tmp_path, img_size=8)
    info = dataset_info(cfg)
    assert info.class_names == ("x", "y") and info.mean == (0.1, 0.2, 0.3) and info.std == (1.0, 2.0, 3.0)
    assert len(build_dataset(cfg, "train", None)) == 6
    test = build_dataset(cfg, "test", None)
    assert len(test) == 3 and test.labels.eq(1).all()


def test_bad_stats_file(tmp_path: Path) -> None:
    make_tree(tmp_path, classes=None, n=4)
    (tmp_path / "maelab_stats.json").write_text(json.dumps({"mean": [0.5], "std": [0.5]}))
    with pytest.raises(ValueError, match="maelab_stats.json.*--channels"):
        dataset_info(DataConfig(dataset="folder", data=tmp_path))


def test_bad_files_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_tree(tmp_path / "train", classes=("a", "b"), n=30)
    make_tree(tmp_path / "test", classes=("a", "b"), n=4)
    bad = add_bad_files(tmp_path / "train")  # 3 of 33 files: under 10%
    ds = build_dataset(DataConfig(dataset="folder", data=tmp_path, img_size=8, max_bad_fraction=0.1), "train", None)
    assert len(ds) == 33
    with caplog.at_level(logging.WARNING, logger="maelab.data.folder"):
        items = [ds[i] for i in range(len(ds))]
    assert set(ds.bad_files) == set(bad)
    assert all(img.shape == (3, 8, 8) for img, _ in items)
    assert all(str(p) in caplog.text for p in bad)
    # A bad index yields the next good sample, with that sample's own label.
    bad_index = ds._paths.tolist().index(str(bad[0]))
    following = next(i for i in range(bad_index + 1, len(ds)) if Path(ds._paths[i]) not in bad)
    image, label = ds[bad_index]
    assert torch.equal(image, ds[following][0]) and label == ds[following][1]


def test_too_many_bad_files_raise(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", classes=("a", "b"), n=10)
    make_tree(tmp_path / "test", classes=("a", "b"), n=2)
    add_bad_files(tmp_path / "train")  # 3 of 13 files: over 10%
    ds = build_dataset(DataConfig(dataset="folder", data=tmp_path, img_size=8, max_bad_fraction=0.1), "train", None)
    with pytest.raises(ValueError, match="could not be decoded.*--max-bad-fraction 0.1.*repair or delete"):
        for i in range(len(ds)):
            ds[i]


@pytest.mark.parametrize("data", [None, "missing", "empty", "file"])
def test_unusable_paths(tmp_path: Path, data: str | None) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "file").write_text("")
    path = None if data is None else tmp_path / data
    with pytest.raises(ValueError) as info:
        build_dataset(DataConfig(dataset="folder", data=path), "train", None)
    message = str(info.value)
    assert "--data" in message
    if path is not None:
        assert str(path) in message


def test_test_image_outside_train_classes(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", classes=("a",), n=2)
    make_tree(tmp_path / "test", classes=("zebra",), n=2)
    with pytest.raises(ValueError, match="train class folders"):
        build_dataset(DataConfig(dataset="folder", data=tmp_path), "test", None)


def _odd_images(root: Path) -> dict[str, Path]:
    """Modes and sizes beyond the basic set: gray+alpha, 1-bit, palette with transparency, 1 pixel, large."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    images = {
        "LA": rgb.convert("LA"), "1": rgb.convert("1"), "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8),
        "one_pixel": Image.new("RGB", (1, 1), (10, 200, 30)),
        "large": Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)),
    }
    images["P"].info["transparency"] = 0
    paths = {}
    for name, img in images.items():
        paths[name] = root / f"{name}.png"
        img.save(paths[name], **({"transparency": 0} if name == "P" else {}))
    return paths


@pytest.mark.parametrize("channels", [1, 3])
def test_odd_modes_and_sizes_train(tmp_path: Path, channels: int) -> None:
    paths = _odd_images(tmp_path / "train" / "x")
    _odd_images(tmp_path / "test" / "x")
    with Image.open(paths["P"]) as img:
        assert img.mode == "P" and "transparency" in img.info
    cfg = DataConfig(dataset="folder", data=tmp_path, img_size=16, channels=channels, max_bad_fraction=0.0)
    from maelab.data import pretrain_transform

    ds = build_dataset(cfg, "train", pretrain_transform(dataset_info(cfg)))
    for i in range(len(ds)):
        image, _ = ds[i]
        assert image.shape == (channels, 16, 16) and torch.isfinite(image).all()
    assert ds.bad_files == ()
    assert load_image(paths["one_pixel"], 3).flatten().tolist() == [10, 200, 30]


def test_decompression_bomb_is_refused_with_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is over twice the limit
    from maelab.data.images import ImageTooLarge

    with pytest.raises(ImageTooLarge, match="decompression bomb.*downscale"):
        load_image(path, 1)


def test_file_damaged_after_the_scan_is_skipped_at_read_time(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", classes=("a", "b"), n=20)
    make_tree(tmp_path / "test", classes=("a", "b"), n=2)
    ds = build_dataset(DataConfig(dataset="folder", data=tmp_path, img_size=8), "train", None)
    victim = Path(ds._paths[3])
    victim.write_bytes(victim.read_bytes()[:40])  # truncated after indexing
    items = [ds[i] for i in range(len(ds))]
    assert ds.bad_files == (victim,) and len(items) == 20


def test_bad_files_found_by_workers_are_counted_in_the_main_process(tmp_path: Path) -> None:
    make_tree(tmp_path / "train", classes=("a", "b"), n=40)
    make_tree(tmp_path / "test", classes=("a", "b"), n=2)
    bad = add_bad_files(tmp_path / "train")
    ds = build_dataset(DataConfig(dataset="folder", data=tmp_path, img_size=8, max_bad_fraction=0.1), "train", None)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    assert sum(len(batch[0]) for batch in loader) == 43
    assert set(ds.bad_files) == set(bad)
