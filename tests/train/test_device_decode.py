"""pretrain --decode-on-device: JPEG bytes and crop boxes from the loader, decoding and cropping on the device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.cli import main
from maelab.data import DataConfig, build_dataset, dataset_info
from maelab.data.encoded_folder import build_encoded_folder, collate_encoded
from maelab.data.images import load_image, read_jpeg_undecoded
from maelab.data.transforms import CropBox, pretrain_crop_uint8, resized_crop_uint8
from maelab.train.device_decode import DeviceDecoder
from maelab.train.environment import Environment
from maelab.train.loader import make_loader_fn, seed_all

CPU = Environment(device=torch.device("cpu"))
BATCH = 6


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth random RGB image (W, H) = ``size``: upsampled noise, JPEG-friendly like a photo."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def write_jpegs(root: Path, n: int = 18) -> list[Path]:
    """``n`` JPEGs of varied sizes (every third one gray) in class folders a/b, plus two test images."""
    paths = []
    for i in range(n):
        img = _photo((40 + 7 * (i % 4), 30 + 5 * (i % 3)), i)
        path = root / "train" / "ab"[i % 2] / f"img_{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        (img.convert("L") if i % 3 == 0 else img).save(path, quality=90)
        paths.append(path)
    (root / "test" / "a").mkdir(parents=True)
    _photo((40, 30), 99).save(root / "test" / "a" / "t.jpg")
    return paths


def truncate_data(path: Path) -> None:
    """Cut the JPEG just after its start-of-scan marker: the header parses, the pixels cannot be decoded."""
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda") + 20])
    assert read_jpeg_undecoded(path) is not None  # so the loader hands the bytes over


def _config(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="folder", data=root, img_size=16, **kw)


def cpu_batches(cfg: DataConfig, epoch: int = 0) -> list[torch.Tensor]:
    """The --device-augment loader's uint8 batches (the path decode-on-device must reproduce)."""
    info = dataset_info(cfg)
    dataset = build_dataset(cfg, "train", pretrain_crop_uint8(info))
    return [imgs for imgs, _ in make_loader_fn(dataset, BATCH, 0, CPU, 0)(epoch)]


def device_batches(cfg: DataConfig, epoch: int = 0, workers: int = 0):
    info = dataset_info(cfg)
    dataset = build_encoded_folder(cfg, info)
    decoder = DeviceDecoder(dataset, info, CPU.device)
    batches = list(make_loader_fn(dataset, BATCH, 0, CPU, workers, collate_encoded)(epoch))
    return dataset, batches, [decoder(batch) for batch in batches]


def test_device_decode_equals_the_cpu_path_with_the_same_boxes(tmp_path):
    write_jpegs(tmp_path)
    cfg = _config(tmp_path)
    reference = cpu_batches(cfg)
    dataset, batches, decoded = device_batches(cfg)
    assert len(decoded) == len(reference) == 3
    for got, want, batch in zip(decoded, reference, batches):
        assert bool(batch.encoded.all())  # every file left the loader undecoded
        assert got.dtype == torch.uint8 and got.shape == (BATCH, 3, 16, 16)
        # Exact on the CPU: the same libjpeg-turbo decode and torchvision's own resize kernel. On a GPU
        # nvJPEG and the CUDA kernel may differ by a few grey levels (not measured: no GPU here).
        assert torch.equal(got, want)
        for row in range(BATCH):
            item = batch.item(row)
            image = load_image(dataset.path(item.file), 3)  # (3, H, W)
            seed_all(item.seed)
            box = pretrain_crop_uint8(dataset_info(cfg)).transforms[0].make_params([image])
            assert item.box == (box["top"], box["left"], box["height"], box["width"])


def test_gray_model_decodes_luma_on_the_device(tmp_path):
    write_jpegs(tmp_path, n=12)
    cfg = _config(tmp_path, channels=1)
    reference = cpu_batches(cfg)
    _, _, decoded = device_batches(cfg)
    for got, want in zip(decoded, reference):
        assert got.shape == want.shape == (BATCH, 1, 16, 16)
        # libjpeg's gray output is the stored luma (Y); the CPU path takes PIL's 601-2 luma of the decoded
        # RGB, which is Y again up to the rounding and clipping of the RGB values: rare 1-3 level differences.
        diff = (got.int() - want.int()).abs()  # (B, 1, 16, 16)
        assert diff.max() <= 4 and diff.float().mean() < 0.05


def test_deterministic_and_independent_of_workers(tmp_path):
    write_jpegs(tmp_path)
    cfg = _config(tmp_path)
    first = device_batches(cfg, epoch=1)[2]
    again = device_batches(cfg, epoch=1, workers=2)[2]
    other_epoch = device_batches(cfg, epoch=2)[2]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(torch.cat(first), torch.cat(other_epoch))


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_folder_png_and_broken_files(tmp_path, workers):
    files = write_jpegs(tmp_path, n=20)
    _photo((44, 33), 50).save(files[1].with_suffix(".png"))  # decoded in the loader
    files[1].unlink()
    files[4].write_bytes(b"not an image at all")  # the loader's header check finds it
    truncate_data(files[7])  # found by decode_jpeg in the training process
    cfg = _config(tmp_path, max_bad_fraction=0.2)
    reference = cpu_batches(cfg)
    dataset, batches, decoded = device_batches(cfg, workers=workers)
    assert sum(int((~b.encoded).sum()) for b in batches) == 1  # the PNG
    assert set(dataset.bad_files) == {files[4], files[7]}
    # Both paths substitute the next readable file for a broken one, with the broken one's seed.
    assert all(torch.equal(a, b) for a, b in zip(decoded, reference))


def test_too_many_broken_files_stop_with_the_folder_message(tmp_path):
    files = write_jpegs(tmp_path, n=12)
    for path in files[:3]:
        truncate_data(path)
    with pytest.raises(ValueError, match="could not be decoded, more than --max-bad-fraction"):
        device_batches(_config(tmp_path, max_bad_fraction=0.1))


def test_crop_box_draws_what_random_resized_crop_draws():
    info = dataset_info(DataConfig(dataset="synthetic", channels=3))
    image = torch.randint(0, 256, (3, 45, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for seed in range(5):
        seed_all(seed)
        box = CropBox(info)(45, 70)
        seed_all(seed)
        want = pretrain_crop_uint8(info)(image)  # (3, 32, 32)
        assert torch.equal(resized_crop_uint8(image, box, info.img_size), want)


def test_pretrain_decode_on_device_runs_one_epoch(tmp_path):
    write_jpegs(tmp_path / "data", n=20)
    out = tmp_path / "run"
    assert main(["pretrain", "--model", "debug", "--dataset", "folder", "--data", str(tmp_path / "data"),
                 "--img-size", "32", "--batch-size", "8", "--epochs", "1", "--decode-on-device", "--num-workers", "1",
                 "--no-tensorboard", "--output-dir", str(out)]) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "epoch" and records[-1]["loss"] > 0
    assert json.loads((out / "config.json").read_text())["decode_on_device"] is True


def test_bench_loader_times_the_decode_on_device_path(tmp_path):
    write_jpegs(tmp_path / "data", n=20)
    assert main(["bench", "--models", "debug", "--batch-sizes", "4", "--variants", "mae", "--steps", "1",
                 "--warmup", "0", "--matmul-size", "64", "--loader", "--dataset", "folder",
                 "--data", str(tmp_path / "data"), "--output", str(tmp_path / "b")]) == 0
    loader = json.loads((tmp_path / "b.json").read_text())["loader"]
    for path in ("train_path", "uint8_device_path", "jpeg_device_decode_path"):
        assert loader[path]["images"] == 20 and loader[path]["img_per_s"] > 0  # 5 batches of 4
    assert "JPEG decoded on the device" in (tmp_path / "b.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "synthetic"], "--decode-on-device decodes the JPEG files of an image folder"),
    (["--dataset", "folder", "--augment", "crop_jitter"], "implements the default augmentation only"),
])
def test_unsupported_combinations_exit_2(tmp_path, capsys, args, message):
    write_jpegs(tmp_path / "data", n=4)
    argv = ["pretrain", "--model", "debug", *args, "--data", str(tmp_path / "data"), "--decode-on-device",
            "--output-dir", str(tmp_path / "run")]
    if "synthetic" in args:
        argv.remove("--data")
        argv.remove(str(tmp_path / "data"))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_other_commands_do_not_take_the_flag(capsys):
    assert main(["finetune", "--decode-on-device"]) == 2
    err = capsys.readouterr().err
    assert "--decode-on-device (applied to maelab finetune)" in err and "maelab pretrain --help" in err
