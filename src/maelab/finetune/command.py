"""``maelab finetune``: end-to-end, partial or from-scratch fine-tuning on the shared loop.

Recipe (paper appendix): AdamW (0.9, 0.999), lr = blr * batch / 256 with blr 1e-3, weight
decay 0.05, layer-wise lr decay 0.75, drop path 0.1, RandAugment (9, 0.5), mixup 0.8,
cutmix 1.0, label smoothing 0.1, random erasing 0.25, average pooling + fc_norm.

Augmentation is timm's training pipeline (the reference code's) on PIL images: timm's
RandAugment is PIL-only and works on mode "L", so 1-channel images need no special path; the
uint8 tensors from the datasets are channel-matched and turned into PIL first.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.data import Mixup
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_layer_decay
from torch import nn
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import v2

from maelab.checkpoint import CheckpointMeta, save_checkpoint
from maelab.data import DataConfig, DatasetInfo, MatchChannels, build_dataset, eval_transform
from maelab.evaluate.classifier import classifier_config, classifier_meta
from maelab.evaluate.data import labeled_info, resolve_data, split_train
from maelab.evaluate.metrics import BEST, ClassifierRun, evaluators
from maelab.evaluate.source import EncoderSource, encoder_source, load_encoder
from maelab.finetune.config import FINETUNE_EPOCHS, FinetuneConfig
from maelab.models.classifier import FrozenInEval, build_vit, init_head
from maelab.models.cnn import build_cnn, cnn_config
from maelab.train.budget import EpochWork
from maelab.train.environment import Environment
from maelab.train.fsdp import build_sharded, plain_state_dict
from maelab.train.loop import StepFn, StepOutput
from maelab.train.optim import adamw
from maelab.train.resume import ResumePoint, save_point
from maelab.train.rundir import JsonlLog
from maelab.train.spine import Built, RunHooks, TimedWork, TrainingBuilders, TrainingData, run_training
from maelab.train.state import LoopState, Progress

logger = logging.getLogger(__name__)

HEAD_INIT_STD = 2e-5
# Never decayed: the learned tokens and position table (biases and norms are excluded as 1-D).
NO_WEIGHT_DECAY = ("pos_embed", "cls_token")
MAX_MAGNITUDE = 9.99


def finetune_transform(info: DatasetInfo, rand_augment: str, reprob: float, crop_scale: float = 0.08):
    """uint8 (C_in, H, W) -> float (channels, img, img): crop (``crop_scale`` to all of the area), flip,
    RandAugment, normalize, erase.

    The pipeline of timm's ``create_transform(is_training=True)`` (the reference code's), built
    from its parts for one reason: magnitudes are capped at 9.99 instead of 10. At exactly 10,
    timm's increasing Posterize asks for 0 bits, which Pillow >= 13 rejects with an error; the
    cap changes no other operation measurably.
    """
    if info.channels not in (1, 3):
        raise ValueError(f"fine-tuning augmentation needs 1- or 3-channel images; got {info.channels} (set --channels)")
    size = info.img_size[0]
    steps: list = [
        MatchChannels(info.channels), v2.ToPILImage(),
        RandomResizedCropAndInterpolation(size, scale=(crop_scale, 1.0), interpolation="bicubic"),
        transforms.RandomHorizontalFlip(),
    ]
    if rand_augment:
        fill = tuple(min(255, round(255 * m)) for m in info.mean)
        hparams = dict(translate_const=int(size * 0.45), img_mean=fill, magnitude_max=MAX_MAGNITUDE)
        steps.append(rand_augment_transform(rand_augment, hparams))
    steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    if reprob > 0:
        steps.append(RandomErasing(reprob, mode="pixel", max_count=1, device="cpu"))
    return transforms.Compose(steps)


def partial_tuning_split(model: VisionTransformer,
                         tune_blocks: float | None) -> tuple[list[nn.Module], list[nn.Module]]:
    """The (tuned, frozen) modules of partial fine-tuning: the last ``tune_blocks`` blocks (+ final norms + head)
    train, the rest is frozen and kept in eval mode. A trailing .5 also tunes the MLP half (norm2 + mlp) of
    the block before them. ``None`` tunes everything (nothing frozen)."""
    if tune_blocks is None:
        return [model], []
    depth = len(model.blocks)
    whole, half = int(tune_blocks), tune_blocks % 1 > 0
    if whole + half > depth:
        raise ValueError(f"--tune-blocks {tune_blocks} exceeds the encoder's {depth} blocks; use at most {depth}")
    first_tuned = depth - whole
    tuned: list[nn.Module] = [*model.blocks[first_tuned:], model.norm, model.fc_norm, model.head]
    frozen: list[nn.Module] = [model.patch_embed, *model.blocks[:first_tuned]]
    if half:
        block = model.blocks[first_tuned - 1]
        tuned += [block.norm2, block.mlp, block.ls2]
        frozen[-1:] = [block.norm1, block.attn, block.ls1, block.drop_path1]
    return tuned, frozen


def freeze_for_partial_tuning(model: VisionTransformer, tune_blocks: float | None) -> list[nn.Module]:
    """Turn off the gradients of :func:`partial_tuning_split`'s frozen part; returns it."""
    tuned, frozen = partial_tuning_split(model, tune_blocks)
    if frozen:
        model.requires_grad_(False)
        for module in tuned:
            module.requires_grad_(True)
    return frozen


def build_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in layer-decay groups (each with its ``lr_scale``)."""
    groups = param_groups_layer_decay(
        model, cfg.optim.weight_decay, no_weight_decay_list=NO_WEIGHT_DECAY, layer_decay=cfg.resolved_layer_decay,
    )
    return adamw(groups, cfg.optim)


def finetune_step(cfg: FinetuneConfig, num_classes: int, device: torch.device) -> StepFn:
    """Cross-entropy on mixup/cutmix-mixed batches (soft targets), label-smoothed or plain without them."""
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    if mixing and cfg.loop.batch_size % 2:
        raise ValueError("mixup/cutmix pair images within a batch: --batch-size must be even; "
                         f"got {cfg.loop.batch_size}")
    # timm's Mixup draws from numpy's global RNG, which the loop seeds per epoch and checkpoints.
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                  num_classes=num_classes) if mixing else None
    if mixup is not None:
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    def step(net: nn.Module, batch_data, generator: torch.Generator) -> StepOutput:
        imgs = batch_data[0].to(device, non_blocking=True)
        target = batch_data[1].to(device, non_blocking=True)
        if mixup is not None:
            imgs, target = mixup(imgs, target)  # target: (B, classes) soft labels
        return StepOutput(loss=criterion(net(imgs).float(), target), batch_size=imgs.shape[0])

    return step


def build_finetune_model(cfg: FinetuneConfig, vit_cfg: dict, source: EncoderSource,
                         env: Environment) -> tuple[VisionTransformer, nn.Module]:
    """The classifier (encoder loaded, head initialized, FSDP-sharded with --fsdp) and what the loop trains:
    itself, or with --tune-blocks a wrapper that keeps the frozen part in eval mode."""

    def build(materialize: bool) -> VisionTransformer:
        if vit_cfg.get("kind") == "cnn":  # timm's own initialization, head included
            return build_cnn(vit_cfg, cfg.drop_path)
        vit = build_vit(vit_cfg, cfg.drop_path)
        if materialize:
            if cfg.init == "pretrained":
                load_encoder(vit, source.pretrained)
            init_head(vit.head, HEAD_INIT_STD)
        freeze_for_partial_tuning(vit, cfg.tune_blocks)  # before sharding, which keeps the flags
        return vit

    torch.manual_seed(cfg.loop.seed)
    vit = build_sharded(build, env.device, env.is_main) if cfg.fsdp else build(True).to(env.device)
    frozen = partial_tuning_split(vit, cfg.tune_blocks)[1]
    trainable = sum(p.numel() for p in vit.parameters() if p.requires_grad)
    logger.info("fine-tuning %d of %d parameters", trainable, sum(p.numel() for p in vit.parameters()))
    return vit, FrozenInEval(vit, frozen) if frozen else vit


@dataclass(frozen=True)
class FinetuneData:
    """What finetune's builders share: the encoder's source, the data and its splits, the classifier's record."""

    source: EncoderSource
    data_cfg: DataConfig
    info: DatasetInfo
    vit_cfg: dict
    splits: dict[str, Dataset | None]
    """The validation (when held out) and test splits, eval-transformed."""
    extra: dict


def finetune_dataset(cfg: FinetuneConfig, point: ResumePoint | None, env: Environment) -> TrainingData:
    """The encoder's source, the augmented training images and the held-out splits."""
    source = encoder_source(cfg.init, cfg.checkpoint, cfg.model, "finetune")
    if cfg.arch is not None and cfg.fsdp:
        raise ValueError("--fsdp shards a ViT block by block; train --arch networks data-parallel (without --fsdp)")
    # A CNN takes the data at its own size and channels; a ViT at its patch grid's.
    data_cfg = resolve_data(cfg.data, source.saved_data, None if cfg.arch else source.config,
                            fixed_channels=source.fixed_channels)
    info = labeled_info(data_cfg)
    vit_cfg = (cnn_config(cfg.arch, info.channels, info.num_classes, info.img_size[0]) if cfg.arch else
               classifier_config(source.config, data_cfg, info.num_classes, global_pool="avg", head="linear"))
    train_set, val_set = split_train(
        build_dataset(data_cfg, "train", finetune_transform(info, cfg.rand_augment, cfg.reprob, cfg.crop_scale)),
        build_dataset(data_cfg, "train", eval_transform(info)), cfg.data)
    splits = {"val": val_set, "test": build_dataset(data_cfg, "test", eval_transform(info))}
    extra = dict(command="finetune", **source.provenance(), tune_blocks=cfg.tune_blocks, arch=cfg.arch or "vit",
                 layer_decay=cfg.resolved_layer_decay, labels_per_class=cfg.data.labels_per_class,
                 label_seed=cfg.data.label_seed, train_images=len(train_set),
                 val_images=len(val_set) if val_set is not None else 0)
    name = f"finetune-{cfg.arch or source.name}" + ("-scratch" if cfg.init == "none" else "")
    return TrainingData(cfg, train_set, name, data_cfg.num_workers,
                        context=FinetuneData(source, data_cfg, info, vit_cfg, splits, extra))


def finetune_model(cfg: FinetuneConfig, data: TrainingData, env: Environment, _) -> Built:
    """The loop trains the classifier (wrapped with --tune-blocks); checkpoints hold the classifier."""
    vit, model = build_finetune_model(cfg, data.context.vit_cfg, data.context.source, env)
    return Built(model, checkpointed=vit)


def finetune_meta(ft: FinetuneData) -> Callable[[int], CheckpointMeta]:
    return lambda epoch: classifier_meta(ft.vit_cfg, ft.info, ft.data_cfg, epoch, ft.extra)


def finetune_hooks(cfg: FinetuneConfig, data: TrainingData, env: Environment, run_dir: Path, built: Built,
                   optimizer: torch.optim.Optimizer, _) -> RunHooks:
    """Every epoch: evaluate the validation and test splits, keep the best and the resumable checkpoints."""
    ft: FinetuneData = data.context
    vit = built.checkpointed
    title = f"finetune {cfg.arch or ft.source.name}" + (" (scratch)" if cfg.init == "none" else "")
    every = eval_every(cfg, data.train_set, ft.splits["val"])
    logger.info("evaluating the validation split every %d epoch(s) and at the last; the test split %s", every,
                "at every evaluation (--fsdp)" if cfg.fsdp else "once, at the end, with the checkpoint chosen on it")
    run = ClassifierRun(
        run_dir, vit, evaluators(vit, ft.splits, cfg.loop.batch_size, env.device, ft.data_cfg.num_workers),
        finetune_meta(ft), ft.info.class_names, title, ft.extra, optimizer, cfg.loop.keep_last, write=env.is_main,
        images=(data.train_set, *ft.splits.values()), eval_every=every, test_at_end=not cfg.fsdp,
    )
    return run.hooks(env.is_main)


# Evaluating an image costs about a third of training on it (a forward pass against forward and backward).
EVAL_SHARE = 0.25


def eval_every(cfg: FinetuneConfig, train_set: Dataset, val_set: Dataset | None) -> int:
    """--eval-every, or the fewest epochs whose validation pass costs at most :data:`EVAL_SHARE` of their training."""
    if cfg.eval_every is not None:
        return cfg.eval_every
    if val_set is None or cfg.fsdp:  # under FSDP the last epoch's evaluation cannot wait for finish()
        return 1
    return max(1, math.ceil(len(val_set) / (3 * EVAL_SHARE * len(train_set))))


def finetune_timed_work(cfg: FinetuneConfig, data: TrainingData, env: Environment, _) -> TimedWork:
    ft: FinetuneData = data.context
    return timed_epoch_end(cfg, ft.splits, finetune_meta(ft), env, ft.data_cfg.num_workers,
                           eval_every(cfg, data.train_set, ft.splits["val"]))


BUILDERS = TrainingBuilders(
    command="finetune", default_epochs=FINETUNE_EPOCHS, dataset=finetune_dataset,
    model=finetune_model,
    optimizer=lambda cfg, model: build_optimizer(_classifier(model), cfg),
    # Looked up at each call, so that a test can replace the module's finetune_step.
    step=lambda cfg, data, env: finetune_step(cfg, data.context.info.num_classes, env.device),
    hooks=finetune_hooks, timed_work=finetune_timed_work,
)


def finetune(cfg: FinetuneConfig, resume: Path | None = None) -> Path:
    """Fine-tune and evaluate every epoch, or continue the run in ``resume``; returns the run directory."""
    builders = BUILDERS if cfg.time_budget is None else dataclasses.replace(BUILDERS, default_epochs=None)
    return run_training(cfg, resume, builders)


def timed_epoch_end(cfg: FinetuneConfig, splits: dict[str, Dataset | None], meta: Callable[[int], CheckpointMeta],
                    env: Environment, num_workers: int, every: int) -> tuple[list[tuple[EpochWork, int]], EpochWork]:
    """What --time-budget times besides the step, on the copy of the trained model: an evaluation (the validation
    split; the test split too under --fsdp, or when there is no validation split, as the end's single test pass)
    with a best-so-far checkpoint, paid every ``every`` epochs (the best may be saved each time: an upper bound),
    and the resumable checkpoint."""
    timed = {name: images for name, images in splits.items()
             if name == "val" or cfg.fsdp or splits.get("val") is None}

    def evaluate_and_keep_best(model: nn.Module, _, log: JsonlLog) -> None:
        model.eval()
        for evaluate in evaluators(model, timed, cfg.loop.batch_size, env.device, num_workers).values():
            evaluate()
        save_checkpoint(log.path.parent / BEST, plain_state_dict(_classifier(model)), meta(1))

    def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, log: JsonlLog) -> None:
        at = Progress(epoch=1, step=1)
        save_point(log.path.parent, _classifier(model), optimizer, meta(1), 1, at, LoopState(), write=env.is_main)

    return [(evaluate_and_keep_best, every)], checkpoint


def _classifier(model: nn.Module) -> nn.Module:
    """The classifier inside what the loop trains (a partial fine-tuning wraps it)."""
    return model.model if isinstance(model, FrozenInEval) else model
