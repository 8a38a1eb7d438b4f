"""Typed, frozen configuration of the frozen-encoder evaluations: linprobe, knn, embed; and the evaluation
commands' data options (:class:`EvalDataOptions`, finetune's too), declared here once.

Recipe defaults follow the paper's appendix (see the help of each field); schedule lengths are sized for a
CPU rather than the paper's 90 epochs on ImageNet. The features read by default are the ones chosen on the
validation split (:class:`maelab.options.FeatureOptions`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from maelab.data.config import BadFileOptions, DatasetName
from maelab.evaluate.image_index import ImageSplit
from maelab.models.registry import DEFAULT_MODEL, preset_help
from maelab.options import BatchOptions, FeatureOptions, LoaderOptions, OptionGroup, RuntimeOptions, WhitenOptions
from maelab.train.config import LoopConfig, OptimConfig

LINPROBE_EPOCHS = 90
PROBE_BLR = 0.1
"""--optimizer sgd's default base learning rate (the paper's probe blr), scaled by batch / 256."""
LARS_LR = 3.2
"""--optimizer lars's absolute learning rate, the same at every batch size (see LinprobeConfig.optimizer):
half the paper's 6.4 (blr 0.1 at batch 16,384), which diverged here at batch 64 and over 270 epochs at 256
(results/probe_lr/)."""


@dataclass(frozen=True)
class ProbeOptimConfig(OptimConfig):
    """The probe's optimizer and learning-rate schedule, for --optimizer lars / sgd (lbfgs solves without one)."""

    # Unset by default so that an explicit --blr, even 0.1, is told apart: --optimizer lars refuses one.
    blr: float | None = None
    """--optimizer sgd's base learning rate: the absolute lr is blr * effective_batch / 256 (default 0.1, the
    paper's probe). --optimizer lars takes an absolute --lr instead."""
    weight_decay: float = 0.0
    warmup_epochs: float | None = 10.0
    """Linear warmup length in epochs of --optimizer lars / sgd (the paper's probe: 10)."""

    def __post_init__(self) -> None:
        if self.blr is None:  # the checks OptimConfig makes, on the default blr
            dataclasses.replace(self, blr=PROBE_BLR)
        else:
            super().__post_init__()

    def absolute_lr(self, effective_batch: int) -> float:
        if self.lr is not None:
            return self.lr
        return (PROBE_BLR if self.blr is None else self.blr) * effective_batch / 256


@dataclass(frozen=True)
class EvalDataOptions(BadFileOptions, LoaderOptions):
    """Which labeled data to evaluate on; unset options come from the pre-training checkpoint.

    The one declaration of the evaluation commands' data options: finetune, linprobe and knn (and the sweeps
    of ablate, which run them) take it whole, so an option added here is added to all of them."""

    dataset: DatasetName | None = None
    """Dataset (default: the one the checkpoint was pre-trained on)."""
    data: Path | None = None
    """Directory holding the data (default: the checkpoint's, when the dataset is the same)."""
    download: bool = True
    img_size: int | None = None
    """Evaluate at this resolution; the position embedding is resampled (default: pre-training size)."""
    channels: int | None = None
    """Must equal the checkpoint's input channels; the data is converted to them anyway."""
    synthetic_size: int | None = None
    """Synthetic train images (default: the checkpoint's)."""
    train_subset: int | None = None
    """Use a fixed random subset of this many training images (default: all but the validation split);
    the validation and test splits stay whole."""
    val_fraction: float = 0.1
    """Hold out this fraction of the training images (a fixed set, chosen by image index) as the validation
    split: every choice that looks at accuracy (the probe's L2 strength, fine-tuning's checkpoint-best) is
    made on it; the test split is only reported. 0 turns it off (then nothing is selected: "best" is the last)."""
    val_size: int | None = None
    """Hold out exactly this many training images instead of --val-fraction."""
    labels_per_class: int | None = None
    """Label budget: train on the labels of only K images per class, a class-balanced draw (--label-seed) from the
    training images outside the validation split, as a user who labeled K of each class. The validation split
    shrinks to at most K per class drawn from it, so every choice (the probe's L2 strength, the checkpoint kept)
    uses only labels that budget affords; the test split stays whole. The other training images stay available
    without their labels (the probe standardizes features with their statistics). Default: every label."""
    label_seed: int = 0
    """Which images carry the --labels-per-class labels (draws are nested: with one seed, the 10 per class are
    the first 10 of the 100 per class)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels_per_class is not None and self.train_subset is not None:
            raise ValueError("--labels-per-class and --train-subset both shrink the labeled training images; "
                             "give one of the two")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ValueError(f"--labels-per-class must be at least 1 (or unset for every label); "
                             f"got {self.labels_per_class}")
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"--train-subset must be at least 1 (or unset for all images); got {self.train_subset}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), e.g. 0.1; got {self.val_fraction}")
        if self.val_size is not None and self.val_size < 0:
            raise ValueError(f"--val-size must be >= 0 (0: no validation split); got {self.val_size}")


Init = Literal["pretrained", "none", "pixels"]


@dataclass(frozen=True)
class FeatureSource(OptionGroup):
    """Where frozen features come from (shared by linprobe and knn)."""

    run: Annotated[tyro.conf.Positional[Path | None], tyro.conf.arg(metavar="RUN")] = None
    """The pre-training run directory or checkpoint, as --checkpoint (give one of the two)."""
    checkpoint: Path | None = None
    """A maelab pre-training checkpoint (.safetensors) or run directory, an official MAE .pth or a
    Hugging Face ViT-MAE / ViT directory; optional with --init none/pixels."""
    init: Init = "pretrained"
    """Features from: the checkpoint's encoder; "none": a random-init encoder of the same architecture
    (the checkpoint's, else --model's; seeded by --seed); "pixels": no encoder, the flattened
    normalized pixels (C*H*W) at the data's native size or --img-size (the raw-pixel floor)."""
    model: Annotated[str, tyro.conf.arg(help=preset_help(
        "Preset giving the architecture when --init none is used without --checkpoint."))] = DEFAULT_MODEL

    def __post_init__(self) -> None:
        # The positional RUN is another spelling of --checkpoint: written as it, so config.json and every
        # use of the config see one field.
        if self.run is not None:
            if self.checkpoint is not None and Path(self.checkpoint) != Path(self.run):
                raise ValueError(f"give the run once: {self.run} and --checkpoint {self.checkpoint} differ")
            object.__setattr__(self, "checkpoint", self.run)
            object.__setattr__(self, "run", None)
        super().__post_init__()


@dataclass(frozen=True)
class LinprobeConfig(FeatureSource, FeatureOptions):
    """Linear probing: a BatchNorm + linear head on the frozen encoder's features."""
    augment: bool = False
    """Random resized crop + flip, running the frozen encoder every step (default: cached features;
    not with --init pixels)."""
    optimizer: Literal["lbfgs", "lars", "sgd"] = "lbfgs"
    """"lbfgs": solve the probe to its optimum on cached features (L2-regularized logistic regression on the
    BatchNorm-standardized features, full-batch L-BFGS, the L2 strength chosen on the validation split; no
    epochs: after the features are computed, one solve per L2 strength, from seconds on a GPU or a few thousand
    images to minutes on a small CPU with tens of thousands). "lars" / "sgd": the paper's schedule over --epochs
    (needed with --augment). LARS scales every step to lr x 0.001 of the weights' norm, so the batch size changes
    the gradient's noise, not the step: under the paper's linear scaling rule (blr 0.1 x batch / 256) a probe at
    batch 256 takes steps 64x smaller than the paper's at 16,384, and on a dataset 20x smaller than ImageNet it
    never gets far. So LARS takes an absolute --lr, 3.2 by default at any batch size, and converges in about
    50,000 steps (epochs x images / batch: a smaller batch converges in fewer epochs); SGD keeps --blr 0.1 x
    batch / 256."""
    c: float | None = None
    """--optimizer lbfgs: the inverse L2 strength (scikit-learn's C) instead of choosing it on the validation
    split from 0.001, 0.01, ..., 100."""
    momentum: float = 0.9
    data: EvalDataOptions = field(default_factory=EvalDataOptions)
    optim: ProbeOptimConfig = field(default_factory=ProbeOptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    output_dir: Path | None = None
    """Run directory; default runs/linprobe-<model>-<time>. Never overwritten."""

    def with_lars_lr(self) -> LinprobeConfig:
        """The config with LARS's absolute learning rate written out (--lr, else LARS_LR); others unchanged."""
        if self.optimizer != "lars" or self.optim.lr is not None:
            return self
        return dataclasses.replace(self, optim=dataclasses.replace(self.optim, lr=LARS_LR))

    def with_default_blr(self) -> LinprobeConfig:
        """The config with sgd's default --blr written out (lars refuses one): runs saved before --blr became
        unset by default recorded 0.1, and compare equal to today's unset --blr through this."""
        if self.optimizer == "lars" or self.optim.blr is not None:
            return self
        return dataclasses.replace(self, optim=dataclasses.replace(self.optim, blr=PROBE_BLR))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1); got {self.momentum}")
        if self.init == "pixels" and self.augment:
            raise ValueError("--init pixels probes cached pixel features only; drop --augment")
        if self.augment and self.optimizer == "lbfgs":
            raise ValueError("--augment runs the encoder on new crops every step, so the probe cannot be solved on "
                             "cached features: add --optimizer lars (the paper's) or --optimizer sgd")
        if self.optimizer == "lars" and self.optim.lr is None and self.optim.blr is not None:
            raise ValueError(f"--optimizer lars takes an absolute --lr (default {LARS_LR} at any batch size; the "
                             f"paper's 6.4 was for batch 16,384), not --blr {self.optim.blr}: LARS's steps do not "
                             "grow with the batch. --blr applies to --optimizer sgd")
        if self.c is not None and (self.c <= 0 or self.optimizer != "lbfgs"):
            raise ValueError(f"--c is the positive inverse L2 strength of --optimizer lbfgs; got --c {self.c} "
                             f"with --optimizer {self.optimizer}")


@dataclass(frozen=True)
class KnnConfig(FeatureSource, FeatureOptions, WhitenOptions, BatchOptions):
    """Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018)."""

    seed: int = 0
    """Seed of the random encoder (--init none)."""
    k: int = 20
    temperature: float = 0.07
    data: EvalDataOptions = field(default_factory=EvalDataOptions)
    output_dir: Path | None = None
    """Run directory; default runs/knn-<model>-<time>. Never overwritten."""
    tensorboard: bool = True
    """Also write the result into TensorBoard event files in the run directory (when tensorboard is installed)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError(f"--k must be at least 1; got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be positive; got {self.temperature}")


@dataclass(frozen=True)
class EmbedConfig(BadFileOptions, RuntimeOptions, FeatureOptions):
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
    img_size: int | None = None
    """Embed at this resolution; the position embedding is resampled (default: the source's)."""
    synthetic_size: int | None = None
    """Synthetic train images (default: the source's)."""
    download: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if Path(self.output).suffix in (".csv", ".json"):
            raise ValueError(f"-o {self.output}: the index and the summary are written as <stem>.csv and "
                             "<stem>.json beside the matrix; name the matrix .safetensors or .npy")

