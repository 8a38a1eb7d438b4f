"""Option groups that several commands share, each declared once and taken by inheritance.

Like :class:`maelab.data.config.BadFileOptions`, every group is a keyword-only frozen dataclass: a command's
config inherits the groups it needs, so each flag has one name, default, help text and check everywhere, the
command's own positional fields stay positional, and config.json stays flat (the same keys as before the
groups existed, so saved runs still resume and compare). A command whose evidence calls for another default
redeclares that one field, with help text that says why (``maelab anomaly``'s features). Every group checks
its own fields in ``__post_init__`` and hands on to the next group of the config's MRO (``super()``), so a config
that inherits several groups runs every check by calling ``super().__post_init__()`` once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Pool = Literal["token", "avg"]

FEATURES_CHOSEN_ON = "results/probe_features"
"""Where the default features were chosen, on the validation split (the mean patch token of all 6 blocks of
the default model beat every shallower choice and the cls token; for the earlier patch-4 model the cls token of
the last block, the paper's probe feature, was 2.8 points below the mean patch token: results/pretrain_budget)."""


@dataclass(frozen=True, kw_only=True)
class OptionGroup:
    """The root of every option group: where the chain of ``__post_init__`` checks ends."""

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class DeviceOptions(OptionGroup):
    """Where a command computes."""

    device: str = "auto"
    """"auto" (CUDA, else Apple's MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"."""


@dataclass(frozen=True, kw_only=True)
class BatchOptions(DeviceOptions):
    """Where and in what batches a command runs a frozen model over images (no training)."""

    batch_size: int = 256
    """Images per forward pass (memory, not results: every image is computed the same way)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1; got {self.batch_size}")
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class LoaderOptions(OptionGroup):
    """How many processes read the images."""

    num_workers: int = 0
    """Data loader worker processes (0: read in the main process)."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0; got {self.num_workers}")
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions(BatchOptions, LoaderOptions):
    """Device, batch size and loader workers of a command that runs a frozen model over images."""


@dataclass(frozen=True, kw_only=True)
class FeatureOptions(OptionGroup):
    """Which features of a frozen encoder a command reads (every patch visible)."""

    pool: Pool = "avg"
    """Each block's feature: the mean of its patch tokens ("avg") or its cls token ("token"), through the
    final norm. Default avg over all blocks: the features chosen on the validation split in
    results/probe_features (every shallower choice and the cls token were lower there)."""
    layers: int | None = None
    """Concatenate the last k blocks' outputs (each through the final norm, pooled by --pool): masked image
    modeling leaves useful features in intermediate blocks. Default: all blocks of the encoder, whatever its
    depth (chosen on validation in results/probe_features)."""

    def __post_init__(self) -> None:
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"--layers must be at least 1 (or unset for all blocks); got {self.layers}")
        super().__post_init__()


def resolved_layers(layers: int | None, depth: int) -> int:
    """``--layers`` as a number of blocks: unset means every one of the encoder's ``depth`` blocks."""
    return depth if layers is None else layers


@dataclass(frozen=True, kw_only=True)
class WhitenOptions(OptionGroup):
    """PCA whitening of the features before they are compared."""

    whiten: int | None = None
    """PCA-whiten the features to this many components (fit on the reference images: kNN's training bank,
    anomaly's normal images), each scaled to unit variance, so that a few high-variance directions shared by
    all images do not dominate the comparison. Default: off, as in the paper / DINO protocol. On Fashion-MNIST it
    lifted kNN by several points for MAE features and raw pixels alike (results/knn_whitening/)."""

    def __post_init__(self) -> None:
        if self.whiten is not None and self.whiten < 1:
            raise ValueError(f"--whiten must be a positive number of components (or unset); got {self.whiten}")
        super().__post_init__()
