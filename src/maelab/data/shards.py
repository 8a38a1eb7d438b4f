"""WebDataset tar shards: write them from an image folder, stream them split across ranks and workers.

``maelab shard IMAGE_FOLDER OUT_DIR`` stores each image's original bytes (no re-encoding, so the
round trip is exact) under ``<key>.<ext>`` with its label in ``<key>.cls``, ``--max-per-shard``
images per ``<split>-NNNNNN.tar``, plus ``shards.json`` (class names, per-shard image counts, and
the normalization stats the folder dataset would use: ``maelab_stats.json`` or the defaults). The
images are written in a seeded random order, so a shard mixes the classes and the first N images
of a split are a random sample of it.

Reading (``--dataset shards --data OUT_DIR``): each epoch the shard list is shuffled by (seed,
epoch), then shard ``i`` goes to global consumer ``i mod (world_size x num_workers)``, so every
image is read at most once per epoch across all ranks and DataLoader workers, and ranks read
distinct data. A consumer may get one shard more than another, so training epochs have a fixed
length every consumer can fill (:func:`stream_batches_per_worker`); the few images beyond it are
skipped that epoch (different ones each epoch).

An image that cannot be decoded is skipped, counted and reported as in the image folder dataset
(:class:`~maelab.data.folder.BadMarks`, ``--max-bad-fraction``). In a training epoch its slot is
filled with the next decodable image of the stream (wrapping to the stream's start), so the
epoch keeps its length, every other image keeps its slot, and a mid-epoch resume still skips the
batches already trained on without decoding them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from maelab.data import folder
from maelab.data.images import DECODE_ERRORS, decode_image_bytes

logger = logging.getLogger(__name__)

try:
    import webdataset as wds
except ModuleNotFoundError as exc:  # an optional extra: the message names the fix
    raise ModuleNotFoundError("maelab's shard support needs webdataset: pip install 'maelab[shards]'") from exc

INDEX_FILE = "shards.json"
WRITE_SEED = 0


def write_shards(root: Path, out_dir: Path, max_per_shard: int = 1000) -> dict:
    """Write the train and test splits of the image folder ``root`` as tar shards; returns the index."""
    if max_per_shard < 1:
        raise ValueError(f"--max-per-shard must be at least 1; got {max_per_shard}")
    root = folder.check_root(Path(root))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already exists and is not empty; choose a new output directory")
    stats = {str(c): dict(zip(("mean", "std"), folder.folder_stats(root, c))) for c in _stats_channels(root)}
    out_dir.mkdir(parents=True, exist_ok=True)
    index: dict = {"source": str(root), "splits": {}, "stats": stats}
    for split in ("train", "test"):
        entries = folder.index_split(root, split)
        index["class_names"] = list(entries.class_names)
        order = list(range(len(entries.files)))
        random.Random(f"{WRITE_SEED}:{split}").shuffle(order)  # shards mix the classes
        counts: dict[str, int] = {}
        with wds.ShardWriter(str(out_dir / f"{split}-%06d.tar"), maxcount=max_per_shard, verbose=0) as sink:
            for i in order:
                path, label = entries.files[i], entries.labels[i]
                ext = path.suffix.lower().lstrip(".") or "img"
                sink.write({"__key__": f"{i:09d}", ext: path.read_bytes(), "cls": str(label).encode()})
                name = Path(sink.fname).name
                counts[name] = counts.get(name, 0) + 1
        shards = sorted(counts)
        index["splits"][split] = {"images": len(entries.files), "shards": shards, "counts": [counts[s] for s in shards]}
        logger.info("%s: %d images in %d shards", split, len(entries.files), len(shards))
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def _stats_channels(root: Path) -> list[int]:
    """The channel counts the folder's normalization stats exist for (a maelab_stats.json fixes one)."""
    usable = []
    for channels in (1, 3):
        try:
            folder.folder_stats(root, channels)
            usable.append(channels)
        except ValueError:
            pass
    if not usable:
        folder.folder_stats(root, 3)  # raises the folder's own message about the broken stats file
    return usable


def read_index(shard_dir: Path | None) -> dict:
    """``shards.json`` of a shard directory; ValueError naming the fix when there is none."""
    if shard_dir is None:
        raise ValueError("dataset 'shards' needs the directory written by `maelab shard`; pass --data DIR")
    path = Path(shard_dir) / INDEX_FILE
    if not path.exists():
        what = "does not exist" if not Path(shard_dir).exists() else f"has no {INDEX_FILE}"
        raise ValueError(f"{shard_dir} {what}; write shards with `maelab shard IMAGE_FOLDER {shard_dir}`")
    index = json.loads(path.read_text())
    for split, part in index.get("splits", {}).items():
        if "counts" not in part:
            raise ValueError(f"{path} lists no per-shard image counts (written by an older maelab); "
                             f"write the shards again with `maelab shard IMAGE_FOLDER NEW_DIR`")
        missing = [name for name in part["shards"] if not (Path(shard_dir) / name).is_file()]
        if missing or not part["shards"] or part["images"] < 1:
            problem = f"is missing {missing[:3]}" if missing else "holds no images"
            raise ValueError(f"{shard_dir}: the {split!r} split {problem}; write the shards again with "
                             "`maelab shard IMAGE_FOLDER NEW_DIR`")
    return index


def shard_stats(index: dict, channels: int, shard_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) stored for ``channels``, else those stored for the other channel count."""
    stored = index.get("stats", {})
    stats = stored.get(str(channels)) or next(iter(stored.values()), None)
    if stats is None:
        raise ValueError(f"{shard_dir}/{INDEX_FILE} holds no normalization stats (written by an older maelab); "
                         "write the shards again with `maelab shard IMAGE_FOLDER NEW_DIR`")
    return tuple(stats["mean"]), tuple(stats["std"])


def stream_batches_per_worker(counts: list[int], batch_size: int, world_size: int, num_workers: int) -> int:
    """Batches every (rank, worker) consumer can fill in any epoch, whatever the shard order.

    A consumer gets at least ``len(counts) // consumers`` shards, so at least the images of that
    many of the smallest shards. ValueError (naming the fix) when that is not one batch.
    """
    consumers = world_size * max(num_workers, 1)
    per_consumer = len(counts) // consumers
    images = sum(sorted(counts)[:per_consumer])
    if images < batch_size:
        need = f"at least {consumers} shards of {batch_size}+ images each"
        raise ValueError(
            f"{len(counts)} shards ({sum(counts)} images) cannot give each of {world_size} rank(s) x "
            f"{max(num_workers, 1)} loader worker(s) a batch of {batch_size}: that needs {need}; write smaller "
            "shards (maelab shard --max-per-shard), or lower --num-workers / --batch-size / the process count"
        )
    return images // batch_size


def decode_sample(sample: dict, channels: int | None = None) -> tuple[torch.Tensor, int]:
    """A WebDataset sample -> (uint8 image (C, H, W), label); JPEG/PNG/... decoded as the folder
    dataset decodes files, to ``channels`` (1 or 3; None keeps the file's own)."""
    label = int(sample["cls"])
    data = next(v for k, v in sample.items() if k not in ("__key__", "__url__", "cls", "__local_path__"))
    return decode_image_bytes(data, channels), label


@dataclasses.dataclass
class StreamPlan:
    """How a training epoch reads the stream: fixed batches per worker, a resume offset, seeded augmentation."""

    batch_size: int
    batches_per_worker: int
    start: int = 0
    """Global batches already trained on this epoch (an exact mid-epoch resume skips them undecoded)."""
    shuffle_buffer: int = 1000
    augment: Callable[[Callable, torch.Tensor, int], torch.Tensor] | None = None
    """``augment(transform, image, key)``: the transform run under RNGs seeded from the image's key
    (independent of ranks, workers and restarts); None runs the transform as is."""


class ShardDataset(IterableDataset):
    """One split's shards streamed as ``(transform(uint8 image), label)``, this rank's and worker's share.

    Args:
        shard_dir: a directory written by :func:`write_shards`.
        split: "train" or "test".
        transform: uint8 (C, H, W) -> model input; None keeps the uint8 tensor.
        rank, world_size: this process's place among the data-parallel ranks.
        seed: the shard order of epoch e is shuffled with (seed, e); call :meth:`set_epoch` each epoch.
        with_keys: also yield each sample's key (for checks and debugging).
        channels: decode to 1 or 3 channels (None: as stored).
        limit: only the first ``limit`` images of the split in written order (a fixed random subset).
        plan: training epochs' fixed length and resume offset (None: every decodable image of my shards once).
        max_bad_fraction: stop with a ValueError once more than this fraction of the split is undecodable.
    """

    def __init__(self, shard_dir: Path, split: str, transform: Callable | None = None, rank: int = 0,
                 world_size: int = 1, seed: int = 0, with_keys: bool = False, channels: int | None = None,
                 limit: int | None = None, plan: StreamPlan | None = None, max_bad_fraction: float = 0.05) -> None:
        super().__init__()
        part = read_index(shard_dir)["splits"].get(split)
        if part is None:
            raise ValueError(f"{shard_dir} holds no {split!r} split")
        self.shard_dir, self.split = Path(shard_dir), split
        self.urls = [str(Path(shard_dir) / name) for name in part["shards"]]
        self.counts = list(part["counts"])
        offsets = [0]
        for count in self.counts[:-1]:
            offsets.append(offsets[-1] + count)
        self.offsets = dict(zip(self.urls, offsets))
        self.num_images = part["images"] if limit is None else min(limit, part["images"])
        self.transform, self.rank, self.world_size = transform, rank, world_size
        self.seed, self.epoch, self.with_keys = seed, 0, with_keys
        self.channels, self.limit, self.plan = channels, limit, plan
        # Keys are the images' indices in the split (write_shards), so the marks are indexed by key.
        self.bad_marks = folder.BadMarks(part["images"], max_bad_fraction, self._name, what="images in the shards",
                                   fix="write the shards again from a repaired image folder (maelab shard)")
        self._written: dict[int, int] | None = None

    def __len__(self) -> int:
        """Images in the split (or the limit); a training epoch reads a few less (see :class:`StreamPlan`)."""
        return self.num_images

    @property
    def bad_files(self) -> tuple[str, ...]:
        """Samples found undecodable so far (``SHARD/KEY``), by any process reading this dataset."""
        return self.bad_marks.names()

    def _name(self, key: int) -> str:
        """``SHARD/KEY`` of the sample with ``key``: where write_shards' seeded order put it."""
        if self._written is None:
            order = list(range(len(self.bad_marks.flags)))
            random.Random(f"{WRITE_SEED}:{self.split}").shuffle(order)
            self._written = {k: position for position, k in enumerate(order)}
        position, shard = self._written.get(key, -1), 0
        while shard + 1 < len(self.urls) and position >= self.offsets[self.urls[shard + 1]]:
            shard += 1
        return f"{Path(self.urls[shard]).name}/{key:09d}"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def configured(self, **changes) -> ShardDataset:
        """A copy with some of rank, world_size, seed, epoch, limit, plan, transform changed."""
        copy = object.__new__(ShardDataset)
        copy.__dict__.update(self.__dict__)
        for name, value in changes.items():
            assert name in copy.__dict__, name
            setattr(copy, name, value)
        if "limit" in changes and changes["limit"] is not None:
            copy.num_images = min(changes["limit"], sum(self.counts))
        return copy

    def my_shards(self, worker: int, num_workers: int) -> list[str]:
        """The shards of consumer (rank, worker) this epoch: every shard goes to exactly one consumer."""
        order = list(self.urls)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        consumer = self.rank * num_workers + worker
        return order[consumer::self.world_size * num_workers]

    def _raw(self, shards: list[str]) -> Iterator[dict]:
        """Undecoded samples of ``shards`` in order, within the limit."""
        for url in shards:
            stop = None if self.limit is None else self.limit - self.offsets[url]
            if stop is not None and stop <= 0:
                continue
            source = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
            for j, sample in enumerate(source):
                if stop is not None and j >= stop:
                    break
                yield sample

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan
        if plan is None:
            for sample in self._raw(self.my_shards(worker, num_workers)):
                image = self._decode(sample)
                if image is not None:
                    yield self._item(image, sample, int(sample["__key__"]))
            return
        # On a resume at global batch ``start``, loader worker 0 must serve batch ``start``: rotate the roles.
        worker = (worker + plan.start) % num_workers
        shards, consumer = self.my_shards(worker, num_workers), self.rank * num_workers + worker

        def stream() -> Iterator[dict]:
            """My undecoded samples in this epoch's order; the same sequence on every call."""
            samples = self._raw(shards)
            if plan.shuffle_buffer > 1:
                rng = random.Random(f"{self.seed}:{self.epoch}:{consumer}")
                samples = wds.shuffle(plan.shuffle_buffer, initial=plan.shuffle_buffer, rng=rng)(samples)
            return samples

        # Global batch k comes from role k mod W: the first ``start`` batches hold this many of mine.
        skipped = max(0, -(-(plan.start - worker) // num_workers))
        first, end = skipped * plan.batch_size, plan.batches_per_worker * plan.batch_size
        ahead = _Lookahead(stream)
        ahead.advance(first)  # undecoded: a broken image there took a substitute without moving any other slot
        for slot in range(first, end):
            yield self._fill(ahead, slot, stream)
            ahead.advance(slot + 1)

    def _fill(self, ahead: _Lookahead, slot: int, stream: Callable[[], Iterator[dict]]):
        """The item of ``slot``: its own sample, or when that is undecodable the next decodable one of the
        stream (wrapping to its start), augmented with the RNGs of the slot's own sample."""
        own = ahead.get(slot)
        assert own is not None, "stream_batches_per_worker promised this many samples"
        for sample in _candidates(ahead, slot, stream):
            image = self._decode(sample)
            if image is not None:
                return self._item(image, sample, int(own["__key__"]))
        raise ValueError(f"no image of the shards {self.shard_dir}/{self.split}-* read by this loader worker can be "
                         "decoded; write the shards again from a repaired image folder (maelab shard)")

    def _decode(self, sample: dict) -> torch.Tensor | None:
        """The sample's uint8 image, or None when it is undecodable (marked bad, logged, counted)."""
        key = int(sample["__key__"])
        if self.bad_marks[key]:
            return None
        try:
            image, _ = decode_sample(sample, self.channels)
        except DECODE_ERRORS as exc:
            self.bad_marks.mark(key, exc, where=f" ({sample.get('__url__', '')})")
            return None
        return image

    def _item(self, image: torch.Tensor, sample: dict, augment_key: int):
        label = int(sample["cls"])
        if self.transform is not None:
            if self.plan is not None and self.plan.augment is not None:
                image = self.plan.augment(self.transform, image, augment_key)
            else:
                image = self.transform(image)
        return (image, label, sample["__key__"]) if self.with_keys else (image, label)


def _candidates(ahead: _Lookahead, slot: int, stream: Callable[[], Iterator[dict]]) -> Iterator[dict]:
    """The samples from ``slot`` to the stream's end, then (wrapping) those before ``slot``."""
    position = slot
    while (sample := ahead.get(position)) is not None:
        yield sample
        position += 1
    yield from itertools.islice(stream(), slot)


class _Lookahead:
    """Positions of a sample stream read in order, with a look ahead at later ones (kept until passed)."""

    def __init__(self, make: Callable[[], Iterator[dict]]) -> None:
        self.samples, self.buffer, self.base = iter(make()), [], 0  # buffer[k] is position base + k

    def get(self, position: int) -> dict | None:
        """The sample at ``position`` (>= the current one); None past the stream's end."""
        while position - self.base >= len(self.buffer):
            sample = next(self.samples, None)
            if sample is None:
                return None
            self.buffer.append(sample)
        return self.buffer[position - self.base]

    def advance(self, position: int) -> None:
        """Forget the positions before ``position``, reading past unread ones without keeping them."""
        drop = min(position - self.base, len(self.buffer))
        del self.buffer[:drop]
        self.base += drop
        while self.base < position and next(self.samples, None) is not None:
            self.base += 1
