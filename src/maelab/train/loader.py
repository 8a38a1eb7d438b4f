"""Reproducible data order and augmentation randomness, independent of workers and restarts.

Every epoch's order is a permutation drawn from ``(seed, epoch)``; every sample's
augmentation runs under RNGs seeded from ``(seed, epoch, index)``. So a batch's content
depends neither on how many loader workers there are nor on whether the process was
restarted in the middle of the epoch: resuming after ``k`` batches only has to drop the
first ``k`` batches of the order, without decoding them. Nor does it depend on the number of
data-parallel ranks: each takes its share of every global batch (:func:`make_loader_fn`).
"""

from __future__ import annotations

import hashlib
import random
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

if TYPE_CHECKING:
    from maelab.train.environment import Environment

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads consecutive indices over the seed space


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """A reproducible 63-bit seed per (run seed, epoch, stream), independent of call order."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed the main process's global RNGs at each epoch start (the model's dropout, mixup, ...)."""
    value = epoch_seed(seed, epoch, "global")
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def sample_seed(epoch_base: int, index: int) -> int:
    """The seed of one sample's augmentation within an epoch."""
    return (epoch_base + (index + 1) * _MIX) % 2**63


def seed_all(seed: int) -> None:
    """Seed the CPU torch, numpy and python ``random`` global RNGs (not CUDA: samples are made on the CPU)."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def preserved_rngs() -> Iterator[None]:
    """Restore the CPU torch, numpy and python RNG states after the body.

    A loader without workers draws samples in the training process: restoring keeps the
    training step's random streams untouched by the data's.
    """
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


class SeededSamples(Dataset):
    """Wraps a dataset whose keys are ``(index, seed)``: item ``index`` drawn with the RNGs seeded by ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        # One save/restore per batch: numpy's state round trip costs ~0.1 ms.
        with preserved_rngs():
            out = []
            for index, seed in keys:
                seed_all(seed)
                out.append(self.dataset[index])
            return out


def epoch_order(num_items: int, batch_size: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's sample indices (N // batch_size * batch_size,), the last partial batch dropped."""
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, "data"))
    order = torch.randperm(num_items, generator=gen)  # (N,)
    return order[: num_items // batch_size * batch_size]


def _ignore_stop_signals(worker_id: int) -> None:
    # SIGINT from a terminal reaches the whole process group: workers keep serving batches
    # so the main process can finish its optimizer step and save before it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_batches(loader: DataLoader, dataset: Dataset) -> Iterator:
    """``loader``'s batches; an error raised in a worker stops the workers before it propagates.

    A worker's error reaches the main process with the loader's iterator (which owns the workers) in
    its traceback's frames. Left there, the workers outlive the error until interpreter exit, where
    multiprocessing ends them with SIGTERM, which they ignore (:func:`_ignore_stop_signals`): the
    process would hang instead of exiting. Clearing those frames lets the iterator shut its workers
    down at once. Too many undecodable images is re-raised from the dataset's shared marks as its
    one-line error instead of the worker's traceback.
    """
    try:
        yield from loader
    except Exception as exc:
        traceback.clear_frames(exc.__traceback__)
        # A Subset (--train-subset) holds the dataset that marks its images.
        marks = getattr(getattr(dataset, "dataset", dataset), "bad_marks", None)
        if marks is not None:
            marks.check()
        raise


def _training_batches(data: Dataset, dataset: Dataset, batch_size: int, num_workers: int, env: Environment,
                      **loader_args: Any) -> Iterator:
    """The batches of a training DataLoader over ``data`` (``dataset``, or a view of it) with the settings every
    training loader shares: whole batches, pinned memory on CUDA, workers that survive a stop signal, and
    :func:`worker_batches` to end those workers with an error."""
    loader = DataLoader(data, batch_size=batch_size, drop_last=True, num_workers=num_workers,
                        pin_memory=env.device.type == "cuda",
                        worker_init_fn=_ignore_stop_signals if num_workers else None, **loader_args)
    return worker_batches(loader, dataset)


def rank_share(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an order of whole global batches: positions rank, rank + N, rank + 2N, ...

    (K * N * B,) -> (K * B,): the union of the ranks' k-th batches is the k-th global batch, and a
    rank's j-th sample of it is the global batch's row ``rank + N * j``
    (as :func:`~maelab.train.distributed.rank_rows`).
    """
    return order[rank::world_size]


def make_loader_fn(dataset: Dataset, batch_size: int, seed: int, env: Environment, num_workers: int,
                   collate_fn: Callable | None = None):
    """A function ``make(epoch, start=0)`` giving that epoch's batches from batch ``start`` on.

    The order and every sample's augmentation are fixed by ``(seed, epoch)``; ``start``
    skips batches already trained on (exact mid-epoch resume) without loading them. On N ranks
    ``batch_size`` is per rank: the order is cut into global batches of N x ``batch_size`` and each
    rank takes its share, with the same per-image seeds, so N ranks see what one process with
    batch N x ``batch_size`` sees. ``collate_fn`` None: the DataLoader's default.
    """
    wrapped = SeededSamples(dataset)
    global_batch = batch_size * env.world_size

    def make(epoch: int, start: int = 0) -> Iterator:
        order = epoch_order(len(dataset), global_batch, seed, epoch)[start * global_batch:]  # (K * N * B,)
        order = rank_share(order, env.rank, env.world_size)  # (K * B,)
        base = epoch_seed(seed, epoch, "sample")
        keys = [(i, sample_seed(base, i)) for i in order.tolist()]
        # The loader draws its workers' base seed from this generator, never from the global RNG.
        return _training_batches(wrapped, dataset, batch_size, num_workers, env, sampler=keys, collate_fn=collate_fn,
                                 generator=torch.Generator().manual_seed(base))

    return make


class SeededAugment:
    """``(transform, image, key) -> transform(image)`` under RNGs seeded from (seed, epoch, key):
    a streamed image's augmentation, the same on any rank, worker or restart (picklable for workers)."""

    def __init__(self, seed: int, epoch: int) -> None:
        self.base = epoch_seed(seed, epoch, "sample")

    def __call__(self, transform, image: torch.Tensor, key: int) -> torch.Tensor:
        with preserved_rngs():
            seed_all(sample_seed(self.base, key))
            return transform(image)


class TrainData(NamedTuple):
    """How the shared loop reads the training set (:func:`train_loader`)."""

    make: Callable[..., Iterable]
    """``make(epoch, start=0)``: the epoch's batches from batch ``start`` on."""
    steps: int
    """Batches per epoch on every rank."""
    stream_workers: int | None
    """For a stream, the loader workers its order depends on (a mid-epoch resume needs the same); else None."""


def train_loader(dataset: Dataset, batch_size: int, seed: int, env: Environment, num_workers: int,
                 collate_fn: Callable | None = None) -> TrainData:
    """How the shared loop reads ``dataset``: a map-style dataset (:func:`make_loader_fn`) or a
    streamed :class:`~maelab.data.shards.ShardDataset`.

    A stream's epoch is the fixed number of batches every (rank, worker) can fill whatever the
    epoch's shard order (:func:`~maelab.data.shards.stream_batches_per_worker`), so every rank runs
    the same number of steps. Its order depends on the number of ranks and workers (shards are
    dealt to them), unlike the map-style path; a mid-epoch ``start`` skips the batches already
    trained on without decoding them, exactly when the worker count is the one that trained them.
    """
    if not isinstance(dataset, IterableDataset):
        from maelab.train.distributed import steps_per_epoch

        return TrainData(make_loader_fn(dataset, batch_size, seed, env, num_workers, collate_fn),
                         steps_per_epoch(len(dataset), batch_size, env.world_size), None)
    from maelab.data.shards import StreamPlan, stream_batches_per_worker

    workers = max(num_workers, 1)
    per_worker = stream_batches_per_worker(dataset.counts, batch_size, env.world_size, num_workers)

    def make(epoch: int, start: int = 0) -> Iterator:
        plan = StreamPlan(batch_size, per_worker, start, augment=SeededAugment(seed, epoch))
        part = dataset.configured(rank=env.rank, world_size=env.world_size, seed=seed, epoch=epoch, plan=plan)
        return _training_batches(part, part, batch_size, num_workers, env)

    return TrainData(make, per_worker * workers, num_workers)
