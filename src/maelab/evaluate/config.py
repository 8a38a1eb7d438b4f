"""Typed, frozen configuration of the evaluation commands: finetune, linprobe, knn.

Recipe defaults follow the paper's appendix (see the README of each field); schedule
lengths are sized for a CPU rather than the paper's 100/90 epochs on ImageNet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from maelab.data.config import BadFileOptions, DatasetName
from maelab.models.registry import DEFAULT_MODEL, preset_help
from maelab.train.budget import BudgetPlan, check_time_budget
from maelab.train.config import LoopConfig, OptimConfig

FINETUNE_EPOCHS = 10
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
class EvalDataOptions(BadFileOptions):
    """Which labeled data to evaluate on; unset options come from the pre-training checkpoint."""

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
    num_workers: int = 0
    train_subset: int | None = None
    """Use a fixed random subset of this many training images (default: all but the validation split);
    the validation and test splits stay whole."""
    val_fraction: float = 0.1
    """Hold out this fraction of the training images (a fixed set, chosen by image index) as the validation
    split: every choice that looks at accuracy (the probe's L2 strength, fine-tuning's checkpoint-best) is
    made on it; the test split is only reported. 0 turns it off (then nothing is selected: "best" is the last)."""
    val_size: int | None = None
    """Hold out exactly this many training images instead of --val-fraction."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_subset is not None and self.train_subset < 1:
            raise ValueError(f"--train-subset must be at least 1 (or unset for all images); got {self.train_subset}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), e.g. 0.1; got {self.val_fraction}")
        if self.val_size is not None and self.val_size < 0:
            raise ValueError(f"--val-size must be >= 0 (0: no validation split); got {self.val_size}")


@dataclass(frozen=True)
class FinetuneConfig:
    """End-to-end fine-tuning (or partial fine-tuning, or training from scratch) of the encoder."""

    checkpoint: Path | None = None
    """A maelab pre-training checkpoint (.safetensors) or run directory, an official MAE .pth
    (mae_pretrain_vit_base.pth, ..._full.pth, mae_visualize_*.pth) or a Hugging Face ViT-MAE / ViT
    directory; optional with --init none."""
    init: Literal["pretrained", "none"] = "pretrained"
    """"none" trains the same ViT from random init (the supervised-from-scratch baseline)."""
    model: Annotated[str, tyro.conf.arg(help=preset_help(
        "Preset giving the architecture when --init none is used without --checkpoint."))] = DEFAULT_MODEL
    data: EvalDataOptions = field(default_factory=EvalDataOptions)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(blr=1e-3, min_lr=1e-6, weight_decay=0.05, beta2=0.999, warmup_epochs=1.0)
    )
    loop: LoopConfig = field(default_factory=LoopConfig)
    layer_decay: float = 0.75
    """Layer-wise lr decay: block i gets decay^(depth + 1 - (i + 1)); 1 turns it off."""
    drop_path: float = 0.1
    mixup: float = 0.8
    """Mixup alpha (0 turns it off)."""
    cutmix: float = 1.0
    """CutMix alpha (0 turns it off)."""
    smoothing: float = 0.1
    """Label smoothing."""
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    """timm RandAugment spec (the paper's RandAug(9, 0.5)); "" turns it off."""
    reprob: float = 0.25
    """Random erasing probability."""
    crop_scale: float = 0.08
    """Smallest area fraction of the random resized crop (the paper's 0.08, timm's default; the crop covers this to
    all of the image). 1 keeps the whole image (then only the flip and RandAugment change it)."""
    tune_blocks: float | None = None
    """Partial fine-tuning: train only the last k blocks (+ final norm + head); 0 = frozen encoder;
    a trailing .5 adds the MLP half of one more block (0.5 = norm2 + mlp of the last block)."""
    time_budget: str | None = None
    """Fine-tune for this long, e.g. 30m or 1h, instead of --epochs (as pretrain --time-budget): a few optimizer
    steps on a copy of the classifier time the step, an epoch's validation and test evaluation and a checkpoint
    on this machine, and the run gets the most steps (--steps) whose schedule completes within the budget.
    config.json records the plan; --resume replays it."""
    plan: Annotated[BudgetPlan | None, tyro.conf.Suppress] = None
    """How --time-budget planned the schedule (written to config.json, never given)."""
    output_dir: Path | None = None
    """Run directory; default runs/finetune-<model>-<time>. Never overwritten."""
    fsdp: bool = False
    """Shard the classifier across the torchrun processes (FSDP2 ``fully_shard``, one unit per block) instead
    of replicating it (DDP); for models too large for one device. Checkpoints stay full, so they load back on
    any number of processes. Belongs to one invocation: a resume may turn it on or off."""

    def __post_init__(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"--layer-decay must be in (0, 1]; got {self.layer_decay}")
        for name in ("drop_path", "smoothing", "reprob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1); got {getattr(self, name)}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"--crop-scale is the crop's smallest area fraction, in (0, 1]; got {self.crop_scale}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError("--mixup and --cutmix are Beta-distribution alphas: use 0 (off) or a positive value")
        if self.tune_blocks is not None and (self.tune_blocks < 0 or (2 * self.tune_blocks) % 1):
            raise ValueError(
                f"--tune-blocks must be a whole or half number >= 0 (e.g. 0, 0.5, 1, 2); got {self.tune_blocks}"
            )
        check_time_budget(self.time_budget, self.plan, self.loop, self.fsdp)


Init = Literal["pretrained", "none", "pixels"]


@dataclass(frozen=True)
class FeatureSource:
    """Where frozen features come from (shared by linprobe and knn)."""

    checkpoint: Path | None = None
    """A maelab pre-training checkpoint (.safetensors) or run directory, an official MAE .pth or a
    Hugging Face ViT-MAE / ViT directory; optional with --init none/pixels."""
    init: Init = "pretrained"
    """Features from: the checkpoint's encoder; "none": a random-init encoder of the same architecture
    (the checkpoint's, else --model's; seeded by --seed); "pixels": no encoder, the flattened
    normalized pixels (C*H*W) at the data's native size or --img-size (the raw-pixel floor)."""
    model: Annotated[str, tyro.conf.arg(help=preset_help(
        "Preset giving the architecture when --init none is used without --checkpoint."))] = DEFAULT_MODEL


@dataclass(frozen=True)
class LinprobeConfig(FeatureSource):
    """Linear probing: a BatchNorm + linear head on the frozen encoder's features."""

    pool: Literal["token", "avg"] = "token"
    """Features: the cls token after the final norm (the paper), or the mean of the patch tokens."""
    layers: int = 1
    """Concatenate the last k blocks' outputs (each through the final norm, pooled by --pool): masked image
    modeling leaves useful features in intermediate blocks."""
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
class KnnConfig(FeatureSource):
    """Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018)."""

    seed: int = 0
    """Seed of the random encoder (--init none)."""
    k: int = 20
    temperature: float = 0.07
    pool: Literal["token", "avg"] = "token"
    layers: int = 1
    """Concatenate the last k blocks' outputs (each through the final norm, pooled by --pool)."""
    whiten: int | None = None
    """PCA-whiten the features to this many components (fit on the training bank) before the cosine similarity;
    default: off, as in the paper / DINO protocol. On Fashion-MNIST it lifted kNN by several points for MAE
    features and raw pixels alike (results/knn_whitening/)."""
    data: EvalDataOptions = field(default_factory=EvalDataOptions)
    batch_size: int = 256
    device: str = "auto"
    output_dir: Path | None = None
    """Run directory; default runs/knn-<model>-<time>. Never overwritten."""
    tensorboard: bool = True
    """Also write the result into TensorBoard event files in the run directory (when tensorboard is installed)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"--k must be at least 1; got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be positive; got {self.temperature}")
        if self.whiten is not None and self.whiten < 1:
            raise ValueError(f"--whiten must be a positive number of components (or unset); got {self.whiten}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1; got {self.batch_size}")

