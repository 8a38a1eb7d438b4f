"""The data path alone: images per second from the DataLoader to the device, no model.

Two paths are timed on the same data: the default training path (per-image RandomResizedCrop, flip and
normalization in the loader, float32 batches) and the ``pretrain --device-augment`` path (uint8 crops
from the loader; flip and normalization on the device, batched). For an image folder a third: the
``pretrain --decode-on-device`` path (JPEG bytes and crop boxes from the training loader; decoding,
cropping, resizing, flip and normalization on the device).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from maelab.data import BadFileOptions, DataConfig, build_dataset, dataset_info, pretrain_transform
from maelab.data.encoded_folder import build_encoded_folder, collate_encoded
from maelab.data.transforms import batch_flip_normalize, pretrain_crop_uint8
from maelab.train.device_decode import DeviceDecoder
from maelab.train.environment import Environment
from maelab.train.loader import make_loader_fn

MAX_BATCHES = 30
MAX_SECONDS = 20.0


def device_flip_normalize(imgs: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip (p = 0.5 per image) and normalization of a uint8 batch on its device.

    (B, C, H, W) uint8 -> (B, C, H, W) float32.
    """
    flip = torch.rand(imgs.shape[0], device=imgs.device, generator=generator) < 0.5  # (B,)
    return batch_flip_normalize(imgs, mean, std, flip)


def _time_loader(loader: Iterable, device: torch.device, to_images: Callable[..., torch.Tensor]) -> dict:
    """Images/s of ``to_images(batch)`` (the batch's images on ``device``) over the first batches."""
    count, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        count += to_images(batch).shape[0]
        if i + 1 >= MAX_BATCHES or time.perf_counter() - start > MAX_SECONDS:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"images": count, "seconds": elapsed, "img_per_s": count / elapsed}


def loader_throughput(dataset: str, batch_size: int, num_workers: int, device: torch.device,
                      data: Path | None = None, max_bad_fraction: float = BadFileOptions.max_bad_fraction) -> dict:
    """Images/s of the training data path, of the uint8 + on-device path and, for ``dataset`` "folder",
    of the decode-on-device path (see the module docstring)."""
    cfg = DataConfig(dataset=dataset, data=data, num_workers=num_workers, max_bad_fraction=max_bad_fraction)
    info = dataset_info(cfg)
    common = dict(batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                  pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
    train = DataLoader(build_dataset(cfg, "train", pretrain_transform(info)), **common)
    raw = DataLoader(build_dataset(cfg, "train", pretrain_crop_uint8(info)), **common)  # uint8 (C, H, W) items
    result = {"dataset": dataset, "batch_size": batch_size, "num_workers": num_workers, "device": str(device),
              "train_path": _time_loader(train, device, lambda b: b[0].to(device, non_blocking=True)),
              "uint8_device_path": _time_loader(raw, device, lambda b: device_flip_normalize(
                  b[0].to(device, non_blocking=True), info.mean, info.std))}
    if dataset == "folder":
        encoded = build_encoded_folder(cfg, info)
        decoder = DeviceDecoder(encoded, info, device)
        loader = make_loader_fn(encoded, batch_size, 0, Environment(device), num_workers, collate_encoded)(0)
        result["jpeg_device_decode_path"] = _time_loader(
            loader, device, lambda b: device_flip_normalize(decoder(b), info.mean, info.std))
    result["img_per_s"] = result["train_path"]["img_per_s"]
    return result
