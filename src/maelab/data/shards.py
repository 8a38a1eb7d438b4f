"""WebDataset tar shards: write them from an image folder, stream them split across ranks and workers.

``maelab shard IMAGE_FOLDER OUT_DIR`` stores each image's original bytes (no re-encoding, so the
round trip is exact) under ``<key>.<ext>`` with its label in ``<key>.cls``, ``--max-per-shard``
images per ``<split>-NNNNNN.tar``, plus ``shards.json`` (class names, counts, shard names).

Reading: each epoch the shard list is shuffled by (seed, epoch), then shard ``i`` goes to global
consumer ``i mod (world_size x num_workers)``, so every image is read exactly once per epoch across
all ranks and DataLoader workers. Balanced ranks need at least ``world_size x num_workers`` shards
of similar size; :func:`check_shard_count` says so.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image

from maelab.data import folder

logger = logging.getLogger(__name__)

try:
    import webdataset as wds
except ModuleNotFoundError as exc:  # an optional extra: the message names the fix
    raise ModuleNotFoundError("maelab's shard support needs webdataset: pip install 'maelab[shards]'") from exc

INDEX_FILE = "shards.json"


def write_shards(root: Path, out_dir: Path, max_per_shard: int = 1000) -> dict:
    """Write the train and test splits of the image folder ``root`` as tar shards; returns the index."""
    if max_per_shard < 1:
        raise ValueError(f"--max-per-shard must be at least 1; got {max_per_shard}")
    root = folder.check_root(Path(root))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already exists and is not empty; choose a new output directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict = {"source": str(root), "splits": {}}
    for split in ("train", "test"):
        entries = folder.index_split(root, split)
        index["class_names"] = list(entries.class_names)
        pattern = str(out_dir / f"{split}-%06d.tar")
        with wds.ShardWriter(pattern, maxcount=max_per_shard, verbose=0) as sink:
            for i, (path, label) in enumerate(zip(entries.files, entries.labels)):
                ext = path.suffix.lower().lstrip(".") or "img"
                sink.write({"__key__": f"{i:09d}", ext: path.read_bytes(), "cls": str(label).encode()})
        shards = sorted(p.name for p in out_dir.glob(f"{split}-*.tar"))
        index["splits"][split] = {"images": len(entries.files), "shards": shards}
        logger.info("%s: %d images in %d shards", split, len(entries.files), len(shards))
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def read_index(shard_dir: Path) -> dict:
    path = Path(shard_dir) / INDEX_FILE
    if not path.exists():
        raise ValueError(f"{shard_dir} has no {INDEX_FILE}; write shards with `maelab shard IMAGE_FOLDER {shard_dir}`")
    return json.loads(path.read_text())


def check_shard_count(num_shards: int, world_size: int, num_workers: int) -> None:
    consumers = world_size * max(num_workers, 1)
    if num_shards < consumers:
        logger.warning("%d shards for %d ranks x workers: some consumers get no data; write smaller shards "
                       "(--max-per-shard)", num_shards, consumers)


def decode_sample(sample: dict) -> tuple[torch.Tensor, int]:
    """A WebDataset sample -> (uint8 image (C, H, W), label); JPEG/PNG/... decoded by torchvision."""
    label = int(sample["cls"])
    data = next(v for k, v in sample.items() if k not in ("__key__", "__url__", "cls", "__local_path__"))
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED), label


class ShardDataset(IterableDataset):
    """One split's shards streamed as ``(transform(uint8 image), label)``, this rank's and worker's share.

    Args:
        shard_dir: a directory written by :func:`write_shards`.
        split: "train" or "test".
        transform: uint8 (C, H, W) -> model input; None keeps the uint8 tensor.
        rank, world_size: this process's place among the data-parallel ranks.
        seed: the shard order of epoch e is shuffled with (seed, e); call :meth:`set_epoch` each epoch.
        with_keys: also yield each sample's key (for checks and debugging).
    """

    def __init__(self, shard_dir: Path, split: str, transform: Callable | None = None, rank: int = 0,
                 world_size: int = 1, seed: int = 0, with_keys: bool = False) -> None:
        super().__init__()
        folder_split = read_index(shard_dir)["splits"].get(split)
        if folder_split is None:
            raise ValueError(f"{shard_dir} holds no {split!r} split")
        self.urls = [str(Path(shard_dir) / name) for name in folder_split["shards"]]
        self.num_images = folder_split["images"]
        self.transform, self.rank, self.world_size = transform, rank, world_size
        self.seed, self.epoch, self.with_keys = seed, 0, with_keys

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self, worker: int, num_workers: int) -> list[str]:
        """The shards of consumer (rank, worker) this epoch: every shard goes to exactly one consumer."""
        order = list(self.urls)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        consumer = self.rank * num_workers + worker
        return order[consumer::self.world_size * num_workers]

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.my_shards(worker, num_workers)
        if not shards:
            return
        source = wds.DataPipeline(wds.SimpleShardList(shards),
                                  wds.tarfile_to_samples())
        for sample in source:
            image, label = decode_sample(sample)
            item = (self.transform(image) if self.transform is not None else image, label)
            yield (*item, sample["__key__"]) if self.with_keys else item
