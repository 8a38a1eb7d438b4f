"""``maelab linprobe``: a BatchNorm + linear head on the frozen encoder, on the shared loop.

Recipe (paper appendix): cls-token features after the final norm, BatchNorm1d(affine=False,
eps 1e-6) before the linear head (weights trunc-normal 0.01), LARS with momentum 0.9, blr 0.1,
no weight decay. Without ``--augment`` the encoder's features are computed once and the loop
trains the head on them; with it, the frozen encoder runs on every augmented batch.

Baselines (``--init``, see :func:`maelab.evaluate.features.frozen_features`): ``none`` probes a
randomly initialized encoder of the same architecture (the checkpoint's, else ``--model``'s),
seeded by ``--seed``; ``pixels`` probes the flattened normalized pixels (C*H*W features), i.e.
logistic regression on standardized raw pixels, cached only (``--augment`` is refused). Every
probe, pixels included, writes the same checkpoints: kind "classifier" with ``extra["init"]``;
a pixel probe's ``model_config`` has ``features="pixels"`` and holds only the head's weights,
and :func:`maelab.evaluate.classifier.load_classifier` rebuilds it as a ``PixelProbe``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import Lars
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from maelab.data import DatasetInfo, MatchChannels, build_dataset, eval_transform
from maelab.evaluate.classifier import classifier_meta
from maelab.evaluate.config import LINPROBE_EPOCHS, LinprobeConfig
from maelab.evaluate.data import eval_loader, fixed_subset
from maelab.evaluate.features import FrozenFeatures, extract_features, frozen_features
from maelab.evaluate.metrics import ClassifierRun, EvalResult, evaluate
from maelab.models.classifier import init_head
from maelab.train.distributed import agree
from maelab.train.environment import Environment, setup_environment
from maelab.train.loader import train_loader
from maelab.train.loop import StepFn, StepOutput
from maelab.train.run import TrainSpec, check_batch_size, open_run, train
from maelab.train.rundir import new_run_dir

logger = logging.getLogger(__name__)

HEAD_INIT_STD = 0.01
# The reference probe's crops (torchvision's default scale range).
CROP_SCALE = (0.08, 1.0)


def probe_transform(info: DatasetInfo):
    """Random resized crop + flip: uint8 (C_in, H, W) -> float (channels, img, img)."""
    return v2.Compose([
        v2.RandomResizedCrop(info.img_size, scale=CROP_SCALE, interpolation=v2.InterpolationMode.BICUBIC,
                             antialias=True),
        v2.RandomHorizontalFlip(),
        MatchChannels(info.channels),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(info.mean), list(info.std)),
    ])


def build_probe_optimizer(head: nn.Module, cfg: LinprobeConfig) -> torch.optim.Optimizer:
    """LARS (or SGD) with momentum; biases get neither weight decay nor LARS's trust ratio,
    as in the reference code (timm's Lars adapts only when asked, hence ``always_adapt``)."""
    matrices = [p for p in head.parameters() if p.ndim > 1]
    vectors = [p for p in head.parameters() if p.ndim <= 1]
    wd = cfg.optim.weight_decay
    if cfg.optimizer == "lars":
        return Lars([dict(params=matrices, weight_decay=wd, always_adapt=True),
                     dict(params=vectors, weight_decay=0.0, always_adapt=False)], lr=0.0, momentum=cfg.momentum)
    return torch.optim.SGD([dict(params=matrices, weight_decay=wd), dict(params=vectors, weight_decay=0.0)],
                           lr=0.0, momentum=cfg.momentum)


def linprobe(cfg: LinprobeConfig, resume: Path | None = None) -> Path:
    """Train the probe and evaluate it every epoch, or continue the run in ``resume``; returns the run directory.

    A resumed probe recomputes the cached features (the frozen encoder gives the same ones) and
    restores the head, its BatchNorm statistics and the optimizer from the checkpoint.
    """
    cfg, point = open_run(cfg, resume, "linprobe", LINPROBE_EPOCHS)
    env = setup_environment(cfg.loop)
    frozen = frozen_features(cfg.init, cfg.checkpoint, cfg.model, cfg.data, cfg.pool, "bn_linear", cfg.loop.seed,
                             env.device, "linprobe")
    data_cfg, info = frozen.data, frozen.info
    init_head(frozen.model.head, HEAD_INIT_STD)
    train_images = fixed_subset(
        build_dataset(data_cfg, "train", probe_transform(info) if cfg.augment else eval_transform(info)),
        cfg.data.train_subset,
    )
    test_images = build_dataset(data_cfg, "test", eval_transform(info))
    check_batch_size(len(train_images), cfg.loop.batch_size)
    run_dir = agree(point.run_dir if point is not None else new_run_dir(cfg.output_dir, f"linprobe-{frozen.name}"))
    logger.info("probing %d-dimensional features (--init %s)", frozen.dim, cfg.init)
    # The encoder (if any) stays in eval mode throughout; the loop switches only the head to train mode.
    optimizer = build_probe_optimizer(frozen.model.head, cfg)
    train_set, step, evaluate_fn = (augmented_probe if cfg.augment else cached_probe)(
        frozen, train_images, test_images, cfg.loop.batch_size, env)
    data = train_loader(train_set, cfg.loop.batch_size, cfg.loop.seed, env, data_cfg.num_workers if cfg.augment else 0)
    extra = dict(command="linprobe", **frozen.provenance, pool=cfg.pool, augment=cfg.augment,
                 optimizer=cfg.optimizer, feature_dim=frozen.dim)
    run = ClassifierRun(
        run_dir, frozen.model, evaluate_fn,
        lambda epoch: classifier_meta(frozen.model_config, info, data_cfg, epoch, extra),
        info.class_names, f"linear probe {frozen.name}", extra, optimizer, cfg.loop.keep_last,
    )
    train(TrainSpec(
        command="linprobe", cfg=cfg, run_dir=run_dir, env=env, point=point, model=frozen.model.head,
        optimizer=optimizer, step_fn=step, data=data, dataset_size=len(train_set), save=run.save,
        on_epoch_end=run.on_epoch_end, checkpointed=frozen.model,
        on_restore=lambda state: run.load_state_dict(state["classifier"]),
    ))
    if env.is_main:
        run.finish()
    return run_dir


ProbeData = tuple[Dataset, StepFn, Callable[[], EvalResult]]
"""What the probe trains on, its step, and its test evaluation."""


def augmented_probe(frozen: FrozenFeatures, train_images: Dataset, test_images: Dataset, batch: int,
                    env: Environment) -> ProbeData:
    """--augment: the frozen encoder runs on every augmented training batch."""

    def step(net: nn.Module, batch_data, generator: torch.Generator) -> StepOutput:
        imgs = batch_data[0].to(env.device, non_blocking=True)
        with torch.no_grad():
            features = frozen.encode(imgs)  # (B, D)
        return _probe_step(net, features, batch_data[1].to(env.device))

    test_batches = eval_loader(test_images, batch, env.device, frozen.data.num_workers)
    return train_images, step, lambda: evaluate(frozen.model, test_batches, env.device)


def cached_probe(frozen: FrozenFeatures, train_images: Dataset, test_images: Dataset, batch: int,
                 env: Environment) -> ProbeData:
    """The features of every image are computed once; the head trains on them."""
    logger.info("computing frozen features of %d train and %d test images", len(train_images), len(test_images))
    with torch.autocast(env.device.type, dtype=env.amp_dtype or torch.float32, enabled=env.amp_dtype is not None):
        workers = frozen.data.num_workers
        train_feats = extract_features(frozen.encode, train_images, batch, env.device, "train features", workers)
        test_feats = extract_features(frozen.encode, test_images, batch, env.device, "test features", workers)

    def step(net: nn.Module, batch_data, generator: torch.Generator) -> StepOutput:
        return _probe_step(net, batch_data[0].to(env.device), batch_data[1].to(env.device))

    test_set = TensorDataset(*test_feats)
    head = frozen.model.head
    return TensorDataset(*train_feats), step, lambda: evaluate(head, eval_loader(test_set, 4096, env.device), env.device)


def _probe_step(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    logits = head(feats.float())  # (B, classes)
    accuracy = (logits.detach().argmax(1) == labels).float().mean() * 100
    return StepOutput(loss=F.cross_entropy(logits, labels), batch_size=feats.shape[0],
                      metrics={"train_top1": accuracy})
