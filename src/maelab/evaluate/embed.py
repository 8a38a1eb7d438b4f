"""``maelab embed``: the frozen encoder's features of every image, as one matrix plus an index.

Every patch is visible (no masking, so the result is deterministic) and the features are pooled as the probe
and kNN pool them (:func:`maelab.evaluate.features.frozen_features`: the cls token or the patch mean after the
final norm, optionally the last ``--layers`` blocks concatenated). The matrix goes to a safetensors file (key
``embeddings``) or a ``.npy``; row i is the image on line i of the index ``<stem>.csv``; ``<stem>.json`` says
where the features came from and names the unreadable files that were skipped. Every file is written to a
temporary name and renamed into place. Under torchrun every process embeds a block of the images and rank 0
writes the one matrix (:mod:`maelab.evaluate.embed_ranks`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from maelab.checkpoint import atomic_write
from maelab.data import eval_transform
from maelab.evaluate.config import EmbedConfig, EvalDataOptions
from maelab.evaluate.embed_ranks import embed_on_ranks
from maelab.evaluate.features import ImageFn, apply_to_images, frozen_features
from maelab.evaluate.image_index import (
    INDEX_COLUMNS,
    ImageSet,
    csv_bytes,
    image_sets,
    index_rows,
    readable,
    skipped,
)
from maelab.train.config import to_jsonable
from maelab.train.distributed import init_from_env
from maelab.train.environment import resolve_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageOutputs:
    """Per-image outputs of the readable images of one or more splits, in the order of ``rows``."""

    outputs: dict[str, torch.Tensor]
    """(N, ...) float32 on the CPU per output name."""
    labels: torch.Tensor
    """(N,) labels, -1 when unlabeled."""
    rows: list[dict]
    """One index record per row (:func:`maelab.evaluate.image_index.index_rows`)."""
    where: list[tuple[ImageSet, int]]
    """Each row's split and index in it (to read the image again)."""
    skipped: tuple[str, ...]
    """Unreadable files, left out of the rows."""


def apply_to_sets(fns: dict[str, ImageFn], sets: list[ImageSet], batch_size: int, device: torch.device,
                  num_workers: int = 0, desc: str = "embed") -> ImageOutputs:
    """:func:`~maelab.evaluate.features.apply_to_images` over every split of ``sets`` in order (a progress bar
    per split), the rows of unreadable files dropped: the loop of ``maelab embed`` and ``maelab anomaly``."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in fns}
    labels, rows, where, bad = [], [], [], []
    for images in sets:
        split_outputs, split_labels = apply_to_images(fns, images.dataset, batch_size, device,
                                                      f"{desc} {images.split}", num_workers)
        keep = readable(images.dataset)  # (N,) after the read: the files it could not decode are marked
        for name, value in split_outputs.items():
            outputs[name].append(value[keep])  # (N_readable, ...)
        labels.append(split_labels[keep])  # (N_readable,)
        rows += index_rows(images, keep, split_labels, first_row=len(rows))
        where += [(images, i) for i in keep.nonzero().flatten().tolist()]
        bad += skipped(images.dataset)
    return ImageOutputs({name: torch.cat(parts) for name, parts in outputs.items()}, torch.cat(labels), rows, where,
                        tuple(dict.fromkeys(bad)))


@dataclass(frozen=True)
class Embedded:
    """Features of the readable images of one or more splits, in the order of ``rows``."""

    features: torch.Tensor
    """(N, D) float32 on the CPU."""
    rows: list[dict]
    """One index record per row (:func:`maelab.evaluate.image_index.index_rows`)."""
    skipped: tuple[str, ...]
    """Unreadable files, left out of the rows."""


def embed_images(encode: ImageFn, sets: list[ImageSet], batch_size: int, device: torch.device,
                 num_workers: int = 0) -> Embedded:
    """``encode`` every image of ``sets`` in order (:func:`apply_to_sets`)."""
    done = apply_to_sets({"features": encode}, sets, batch_size, device, num_workers)
    return Embedded(done.outputs["features"], done.rows, done.skipped)


def sidecars(output: Path) -> tuple[Path, Path]:
    """The index (<stem>.csv) and the summary (<stem>.json) beside the matrix."""
    output = Path(output)
    return output.with_suffix(".csv"), output.with_suffix(".json")


def write_matrix(path: Path, features: torch.Tensor, metadata: dict[str, str]) -> None:
    """(N, D) float32 to ``path`` atomically: NumPy for a .npy name, else safetensors with ``metadata``."""
    matrix = features.float().contiguous()
    if Path(path).suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, matrix.numpy()))
        return
    data = safetensors_bytes({"embeddings": matrix}, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


def read_matrix(path: Path) -> torch.Tensor:
    """The (N, D) matrix :func:`write_matrix` wrote."""
    if Path(path).suffix == ".npy":
        return torch.from_numpy(np.load(path))
    return load_file(path)["embeddings"]


def run_embed(cfg: EmbedConfig) -> Path:
    """Write the matrix, its index and its summary (rank 0 under torchrun); returns the matrix's path."""
    start = time.perf_counter()
    device, state = init_from_env(resolve_device(cfg.device))
    opts = EvalDataOptions(dataset=cfg.dataset, data=cfg.data, download=cfg.download, img_size=cfg.img_size,
                           synthetic_size=cfg.synthetic_size, num_workers=cfg.num_workers, val_fraction=0.0,
                           max_bad_fraction=cfg.max_bad_fraction)
    frozen = frozen_features("pretrained", cfg.source, "", opts, cfg.pool, "none", 0, device, "embed", cfg.layers,
                             labeled=False)
    sets = image_sets(frozen.data, frozen.info, eval_transform(frozen.info), cfg.split)
    if state.world_size == 1:
        embedded = embed_images(frozen.encode, sets, cfg.batch_size, device, frozen.data.num_workers)
    else:
        gathered = embed_on_ranks(frozen.encode, sets, cfg.batch_size, device, state, cfg.max_bad_fraction,
                                  frozen.data.num_workers)
        if gathered is None:  # not rank 0: its blocks are in rank 0's matrix
            return Path(cfg.output)
        embedded = Embedded(*gathered)
    index_path, summary_path = sidecars(cfg.output)
    summary = dict(
        matrix=Path(cfg.output).name, index=index_path.name, rows=len(embedded.rows), dim=frozen.dim,
        pool=cfg.pool, layers=frozen.layers, split=cfg.split, **frozen.provenance, data=to_jsonable(frozen.data),
        mean=list(frozen.info.mean), std=list(frozen.info.std), class_names=list(frozen.info.class_names),
        skipped_files=len(embedded.skipped), skipped_file_names=list(embedded.skipped),
    )
    # The sidecars first and the matrix last: a matrix on disk always has its index beside it.
    atomic_write(index_path, lambda f: f.write(csv_bytes(embedded.rows, INDEX_COLUMNS)))
    summary_text = json.dumps(summary, indent=2) + "\n"
    atomic_write(summary_path, lambda f: f.write(summary_text.encode()))
    meta = {"maelab_embed": json.dumps({k: summary[k] for k in ("index", "rows", "dim", "pool", "layers", "init",
                                                                   "source_checkpoint", "model")})}
    write_matrix(cfg.output, embedded.features, meta)
    if embedded.skipped:
        logger.warning("%d unreadable image files skipped (listed in %s; first: %s)", len(embedded.skipped),
                       summary_path, ", ".join(embedded.skipped[:5]))
    logger.info("wrote %s: %d images x %d features (%s pool, %d block(s)) in %.1f s on %d process(es); index %s",
                cfg.output, len(embedded.rows), frozen.dim, cfg.pool, frozen.layers, time.perf_counter() - start,
                state.world_size, index_path)
    return Path(cfg.output)
