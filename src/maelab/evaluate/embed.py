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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from maelab.checkpoint import atomic_write
from maelab.data import eval_transform
from maelab.data.config import BadFileOptions, DatasetName
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.embed_ranks import embed_on_ranks
from maelab.evaluate.features import extract_features, frozen_features
from maelab.evaluate.image_index import (
    INDEX_COLUMNS,
    ImageSet,
    ImageSplit,
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
class EmbedConfig(BadFileOptions):
    """Per-image features of a frozen encoder, every patch visible: one matrix plus an index of the images."""

    source: tyro.conf.Positional[Path]
    """A maelab pre-training run directory or checkpoint, an official MAE .pth or a Hugging Face ViT-MAE / ViT
    directory."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("embeddings.safetensors")
    """The (images, features) float32 matrix: safetensors (key "embeddings"), or NumPy when the name ends in .npy.
    Beside it: <stem>.csv (row, split, index, path, label, class of each row) and <stem>.json (what the
    features are, and the unreadable files skipped)."""
    dataset: DatasetName | None = None
    """Dataset (default: the one the source was pre-trained on)."""
    data: Path | None = None
    """Directory holding the data (default: the source's, when the dataset is the same)."""
    split: ImageSplit = "all"
    """Which images: "all" (a built-in dataset's train then test split; every image file under a folder),
    "train" or "test"."""
    pool: Literal["token", "avg"] = "token"
    """Features: the cls token after the final norm, or the mean of the patch tokens (as linprobe and knn)."""
    layers: int = 1
    """Concatenate the last k blocks' outputs (each through the final norm, pooled by --pool)."""
    img_size: int | None = None
    """Embed at this resolution; the position embedding is resampled (default: the source's)."""
    synthetic_size: int | None = None
    """Synthetic train images (default: the source's)."""
    download: bool = True
    batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    """"auto" (CUDA, else Apple's MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"; features are computed
    in float32."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1; got {self.batch_size}")
        if self.layers < 1:
            raise ValueError(f"--layers must be at least 1; got {self.layers}")
        if Path(self.output).suffix in (".csv", ".json"):
            raise ValueError(f"-o {self.output}: the index and the summary are written as <stem>.csv and "
                             "<stem>.json beside the matrix; name the matrix .safetensors or .npy")


@dataclass(frozen=True)
class Embedded:
    """Features of the readable images of one or more splits, in the order of ``rows``."""

    features: torch.Tensor
    """(N, D) float32 on the CPU."""
    rows: list[dict]
    """One index record per row (:func:`maelab.evaluate.image_index.index_rows`)."""
    skipped: tuple[str, ...]
    """Unreadable files, left out of the rows."""


def embed_images(
    encode: Callable[[torch.Tensor], torch.Tensor], sets: list[ImageSet], batch_size: int, device: torch.device,
    num_workers: int = 0,
) -> Embedded:
    """``encode`` every image of ``sets`` in order (a progress bar per split); rows of unreadable files dropped."""
    feats, rows, bad = [], [], []
    for images in sets:
        split_feats, labels = extract_features(encode, images.dataset, batch_size, device, f"embed {images.split}",
                                               num_workers)
        keep = readable(images.dataset)  # (N,) after the read: the files it could not decode are marked
        feats.append(split_feats[keep])  # (N_readable, D)
        rows += index_rows(images, keep, labels, first_row=len(rows))
        bad += skipped(images.dataset)
    return Embedded(torch.cat(feats), rows, tuple(dict.fromkeys(bad)))


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
        pool=cfg.pool, layers=cfg.layers, split=cfg.split, **frozen.provenance, data=to_jsonable(frozen.data),
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
                cfg.output, len(embedded.rows), frozen.dim, cfg.pool, cfg.layers, time.perf_counter() - start,
                state.world_size, index_path)
    return Path(cfg.output)
