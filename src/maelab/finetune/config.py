"""Typed, frozen configuration of ``maelab finetune``.

Recipe defaults follow the paper's appendix (see the help of each field); the schedule is sized for a CPU
rather than the paper's 100 epochs on ImageNet. Its data options are the evaluation commands' one
declaration (:class:`maelab.evaluate.config.EvalDataOptions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from maelab.evaluate.config import EvalDataOptions
from maelab.models.registry import DEFAULT_MODEL, preset_help
from maelab.train.budget import BudgetPlan, check_time_budget
from maelab.train.config import LoopConfig, OptimConfig

FINETUNE_EPOCHS = 10


@dataclass(frozen=True)
class FinetuneConfig:
    """End-to-end fine-tuning (or partial fine-tuning, or training from scratch) of the encoder."""

    checkpoint: Path | None = None
    """A maelab pre-training checkpoint (.safetensors) or run directory, an official MAE .pth
    (mae_pretrain_vit_base.pth, ..._full.pth, mae_visualize_*.pth) or a Hugging Face ViT-MAE / ViT
    directory; optional with --init none."""
    init: Literal["pretrained", "none"] = "pretrained"
    """"none" trains the same ViT from random init (the supervised-from-scratch baseline)."""
    arch: str | None = None
    """With --init none: train this timm network from random init instead of the ViT (e.g. resnet18), through the
    same loop, label draw and selection: the supervised baseline a practitioner would run instead of MAE. timm
    ResNets on images under 64 pixels get a stride-1 3x3 stem (maelab.models.cnn); no layer decay applies."""
    model: Annotated[str, tyro.conf.arg(help=preset_help(
        "Preset giving the architecture when --init none is used without --checkpoint."))] = DEFAULT_MODEL
    data: EvalDataOptions = field(default_factory=EvalDataOptions)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(blr=1e-3, min_lr=1e-6, weight_decay=0.05, beta2=0.999, warmup_epochs=1.0)
    )
    loop: LoopConfig = field(default_factory=LoopConfig)
    layer_decay: float | None = None
    """Layer-wise lr decay: block i gets decay^(depth + 1 - (i + 1)); 1 turns it off. Default 0.75 for a ViT (the
    paper's, for a pre-trained encoder), 1 for --arch (a CNN has no blocks to decay by)."""
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
    eval_every: int | None = None
    """Evaluate the validation split every N epochs and at the last (the checkpoint kept as best is chosen among
    these). Default: the fewest epochs whose evaluation costs at most about a quarter of their training (at least
    1), so a small training set is not dominated by a large validation split. The test split is scored once, at
    the end, with the checkpoint chosen on validation (under --fsdp, at every evaluation)."""
    fsdp: bool = False
    """Shard the classifier across the torchrun processes (FSDP2 ``fully_shard``, one unit per block) instead
    of replicating it (DDP); for models too large for one device. Checkpoints stay full, so they load back on
    any number of processes. Belongs to one invocation: a resume may turn it on or off."""

    def __post_init__(self) -> None:
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"--layer-decay must be in (0, 1]; got {self.layer_decay}")
        if self.arch is not None and self.init != "none":
            raise ValueError(f"--arch {self.arch} trains a timm network from random init: pass --init none with it")
        if self.arch is not None and self.tune_blocks is not None:
            raise ValueError("--tune-blocks freezes a ViT's blocks; it does not apply to --arch")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"--eval-every must be at least 1 (epochs); got {self.eval_every}")
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

    @property
    def resolved_layer_decay(self) -> float:
        return (1.0 if self.arch is not None else 0.75) if self.layer_decay is None else self.layer_decay
