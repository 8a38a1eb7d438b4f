"""``maelab embed`` under torchrun: every process embeds one block of each split, rank 0 writes the whole matrix.

Each split is cut into ``world_size`` contiguous blocks (:func:`shard_range`, sizes differing by at most one),
so putting the blocks back in rank order (:func:`merge_parts`) restores the images' own order: the matrix and
index are those of one process, row for row, whatever the number of processes. A rank sends its block's
features of the readable images, which of its images were readable and the files it could not read; rank 0
alone gathers them (the matrix is never held by every rank) and decides, for all, whether too many files were
unreadable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from maelab.evaluate.features import extract_features
from maelab.evaluate.image_index import ImageSet, index_rows, readable, skipped
from maelab.train.distributed import DistState, agree


def shard_range(count: int, rank: int, world_size: int) -> range:
    """The indices ``rank`` embeds out of ``count``: the rank-th of ``world_size`` contiguous blocks whose sizes
    differ by at most one (the first ``count % world_size`` blocks hold one more)."""
    assert 0 <= rank < world_size and count >= 0, (count, rank, world_size)
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


@dataclass(frozen=True)
class RankPart:
    """What one rank found in its block of a split."""

    features: torch.Tensor
    """(n_readable, D) float32 on the CPU, in block order."""
    keep: torch.Tensor
    """(n,) bool: which images of the block were readable."""
    labels: torch.Tensor
    """(n,) int64."""
    skipped: tuple[str, ...]


def merge_parts(parts: list[RankPart]) -> RankPart:
    """The parts of ranks 0, 1, ... as one part over the whole split, in the images' order."""
    filled = [p.features for p in parts if p.features.shape[0]]
    return RankPart(
        features=torch.cat(filled) if filled else torch.zeros(0, 0),
        keep=torch.cat([p.keep for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        skipped=tuple(dict.fromkeys(name for p in parts for name in p.skipped)),
    )


def embed_block(encode: Callable[[torch.Tensor], torch.Tensor], images: ImageSet, block: range, batch_size: int,
                device: torch.device, num_workers: int = 0) -> RankPart:
    """Embed the images of ``block`` of one split; rows of unreadable files are left out of the features."""
    if len(block) == 0:  # fewer images than processes
        empty = torch.zeros(0, dtype=torch.bool)
        return RankPart(torch.zeros(0, 0), empty, torch.zeros(0, dtype=torch.long), ())
    subset = Subset(images.dataset, list(block))
    feats, labels = extract_features(encode, subset, batch_size, device, f"embed {images.split}", num_workers)
    keep = readable(subset)  # (n,) after the read, from this process's own marks
    bad = set(skipped(subset))
    paths = [str(images.dataset.path(i)) for i in block] if bad else []
    # Only the files of this block: a substitute read past the block's end was marked here but is another rank's.
    return RankPart(feats[keep], keep, labels, tuple(p for p in paths if p in bad))


def embed_on_ranks(encode: Callable[[torch.Tensor], torch.Tensor], sets: list[ImageSet], batch_size: int,
                   device: torch.device, state: DistState, max_bad_fraction: float, num_workers: int = 0,
                   ) -> tuple[torch.Tensor, list[dict], tuple[str, ...]] | None:
    """Every rank embeds its blocks; rank 0 gets (features (N, D), index rows, skipped files) in the images'
    order, the other ranks None. A collective call.

    Raises:
        ValueError: on every rank, when more than ``max_bad_fraction`` of a split's files were unreadable.
    """
    feats, rows, bad, verdict = [], [], [], None
    for images in sets:
        block = shard_range(len(images.dataset), state.rank, state.world_size)
        part = embed_block(encode, images, block, batch_size, device, num_workers)
        gathered = [None] * state.world_size if state.rank == 0 else None
        dist.gather_object(part, gathered, dst=0)
        if state.rank == 0:
            whole = merge_parts(gathered)
            if len(whole.skipped) > max_bad_fraction * len(images.dataset) and verdict is None:
                verdict = (f"{len(whole.skipped)} of the {len(images.dataset)} image files of the {images.split} "
                           f"split are unreadable, more than --max-bad-fraction {max_bad_fraction} allows (first: "
                           f"{', '.join(whole.skipped[:5])}); check that --data is the folder you meant, or raise "
                           "--max-bad-fraction")
            if whole.features.shape[0]:
                feats.append(whole.features)
            rows += index_rows(images, whole.keep, whole.labels, first_row=len(rows))
            bad += whole.skipped
    verdict = agree(verdict)
    if verdict is not None:
        raise ValueError(verdict)
    if state.rank != 0:
        return None
    return torch.cat(feats), rows, tuple(dict.fromkeys(bad))
