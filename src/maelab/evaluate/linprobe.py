"""``maelab linprobe``: a BatchNorm + linear head on the frozen encoder, on the shared loop.

Recipe (paper appendix): cls-token features after the final norm, BatchNorm1d(affine=False,
eps 1e-6) before the linear head (weights trunc-normal 0.01), LARS with momentum 0.9, no weight
decay; the paper's blr 0.1 becomes an absolute lr 3.2 at any batch size (config.LARS_LR says why).
Without ``--augment`` the encoder's features are computed once and the loop trains the head on
them; with it, the frozen encoder runs on every augmented batch.

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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import Lars
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from maelab.checkpoint import LAST, save_checkpoint
from maelab.data import DatasetInfo, MatchChannels, build_dataset, eval_transform
from maelab.evaluate.classifier import classifier_meta
from maelab.evaluate.config import LINPROBE_EPOCHS, EvalDataOptions, LinprobeConfig
from maelab.evaluate.data import split_train, unlabeled_pool
from maelab.evaluate.features import FrozenFeatures, extract_features, frozen_features
from maelab.evaluate.logistic import load_into_head, solve_probe
from maelab.evaluate.metrics import ClassifierRun, EvalResult, evaluators
from maelab.models.classifier import PROBE_BN_EPS, init_head
from maelab.train.environment import Environment, setup_environment
from maelab.train.loop import StepFn, StepOutput
from maelab.train.resume import ResumePoint, prepare_run_dir
from maelab.train.rundir import new_run_dir, removed_if_failed_before_checkpoint
from maelab.train.spine import Built, RunHooks, TrainingBuilders, TrainingData, run_training

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
    """Probe the frozen features; returns the run directory.

    ``--optimizer lbfgs`` (default) solves the probe on cached features (:func:`solved_probe`);
    LARS / SGD train it over epochs on the shared loop, evaluating every epoch, and can be resumed:
    a resumed probe recomputes the cached features (the frozen encoder gives the same ones) and
    restores the head, its BatchNorm statistics and the optimizer from the checkpoint.
    """
    if cfg.optimizer == "lbfgs" and resume is None:
        return solved_probe(cfg)
    if resume is None:
        cfg = cfg.with_lars_lr()  # written into config.json: a resumed run keeps the lr it started with
    return run_training(cfg, resume, BUILDERS)  # a resumable run is a LARS / SGD one


@dataclass(frozen=True)
class TrainedProbe:
    """What the trained probe's builders share."""

    frozen: FrozenFeatures
    train_images: Dataset
    splits: dict[str, Dataset | None]
    step: StepFn
    evaluate_fns: dict[str, Callable[[], EvalResult]]


def probe_data(cfg: LinprobeConfig, point: ResumePoint | None, env: Environment) -> TrainingData:
    """The frozen encoder with a fresh head, and what the head trains on: cached features or augmented images."""
    frozen = probe_features(cfg, env)
    init_head(frozen.model.head, HEAD_INIT_STD)
    train_images, splits = probe_images(frozen, cfg.data, cfg.augment)
    train_set, step, evaluate_fns = (augmented_probe if cfg.augment else cached_probe)(
        frozen, train_images, splits, cfg.loop.batch_size, env)
    return TrainingData(cfg, train_set, f"linprobe-{frozen.name}", frozen.data.num_workers if cfg.augment else 0,
                        context=TrainedProbe(frozen, train_images, splits, step, evaluate_fns))


def probe_model(cfg: LinprobeConfig, data: TrainingData, env: Environment, _) -> Built:
    """The loop trains the head; the encoder (if any) stays in eval mode throughout; checkpoints hold both."""
    frozen = data.context.frozen
    logger.info("probing %d-dimensional features (--init %s)", frozen.dim, cfg.init)
    return Built(frozen.model.head, checkpointed=frozen.model)


def probe_hooks(cfg: LinprobeConfig, data: TrainingData, env: Environment, run_dir: Path, built: Built,
                optimizer: torch.optim.Optimizer, _) -> RunHooks:
    """Every epoch: evaluate the validation and test splits, keep the best and the resumable checkpoints."""
    probe: TrainedProbe = data.context
    frozen = probe.frozen
    extra = dict(command="linprobe", **frozen.provenance, pool=cfg.pool, layers=frozen.layers, augment=cfg.augment,
                 optimizer=cfg.optimizer, feature_dim=frozen.dim)
    run = ClassifierRun(
        run_dir, frozen.model, probe.evaluate_fns, partial(classifier_meta, frozen.model_config, frozen.info,
                                                           frozen.data, extra=extra),
        frozen.info.class_names, f"linear probe {frozen.name}", extra, optimizer, cfg.loop.keep_last,
        images=(probe.train_images, *probe.splits.values()),
    )
    return run.hooks(env.is_main)


BUILDERS = TrainingBuilders(
    command="linprobe", default_epochs=LINPROBE_EPOCHS, dataset=probe_data, model=probe_model,
    optimizer=lambda cfg, head: build_probe_optimizer(head, cfg), step=lambda cfg, data, env: data.context.step,
    hooks=probe_hooks,
)


def solved_probe(cfg: LinprobeConfig) -> Path:
    """The probe at its optimum (:mod:`maelab.evaluate.logistic`), written as the same classifier checkpoint,
    metrics.json and confusion matrix as a trained probe; the L2 strength is chosen on the validation split."""
    env = setup_environment(cfg.loop)
    frozen = probe_features(cfg, env)
    train_images, splits = probe_images(frozen, cfg.data, augment=False)
    run_dir = new_run_dir(cfg.output_dir, f"linprobe-{frozen.name}")
    logger.info("probing %d-dimensional features (--init %s)", frozen.dim, cfg.init)
    feats = cached_features(frozen, {"train": train_images, **splits}, cfg.loop.batch_size, env)
    # With a label budget the standardization's statistics come from every training image, labeled or not:
    # they need no label, and K images per class estimate a variance per feature poorly.
    pool = (cached_features(frozen, {"unlabeled": unlabeled_pool(build_dataset(
        frozen.data, "train", eval_transform(frozen.info)), cfg.data)}, cfg.loop.batch_size, env)["unlabeled"][0]
        if cfg.data.labels_per_class is not None else None)
    solution = solve_probe(feats["train"], feats.get("val"), frozen.info.num_classes, PROBE_BN_EPS, c=cfg.c,
                           stats_from=pool)
    head = frozen.model.head
    load_into_head(solution, head)
    extra = dict(command="linprobe", **frozen.provenance, pool=cfg.pool, layers=frozen.layers, augment=False,
                 optimizer="lbfgs", feature_dim=frozen.dim, c=solution.c, c_search=solution.search,
                 train_images=len(train_images), val_images=len(splits["val"]) if splits["val"] is not None else 0,
                 labels_per_class=cfg.data.labels_per_class, label_seed=cfg.data.label_seed,
                 statistics_images=len(pool) if pool is not None else len(train_images))
    meta = partial(classifier_meta, frozen.model_config, frozen.info, frozen.data, extra=extra)
    run = ClassifierRun(run_dir, frozen.model, feature_evaluators(head, feats, env.device), meta,
                        frozen.info.class_names, f"linear probe {frozen.name}", extra, optimizer=None, keep_last=1,
                        images=(train_images, *splits.values()))
    with removed_if_failed_before_checkpoint(run_dir, env.is_main):
        log = prepare_run_dir(run_dir, cfg, env, None)
        summary = run.on_epoch_end(0, {"loss": solution.fit.loss})
        log.write(dict(event="epoch", epoch=0, step=solution.fit.iterations, loss=solution.fit.loss, c=solution.c,
                       **summary))
        save_checkpoint(run_dir / LAST, frozen.model.state_dict(), meta(1))
    run.finish()
    return run_dir


def probe_features(cfg: LinprobeConfig, env: Environment) -> FrozenFeatures:
    """The frozen encoder (or pixels) with a BatchNorm + linear head, as --init / --pool / --layers say."""
    return frozen_features(cfg.init, cfg.checkpoint, cfg.model, cfg.data, cfg.pool, "bn_linear", cfg.loop.seed,
                           env.device, "linprobe", cfg.layers)


def probe_images(frozen: FrozenFeatures, opts: EvalDataOptions,
                 augment: bool) -> tuple[Dataset, dict[str, Dataset | None]]:
    """The training images (random crops with ``augment``) and the validation and test splits."""
    data, info = frozen.data, frozen.info
    plain = build_dataset(data, "train", eval_transform(info))
    train_images, val_images = split_train(
        build_dataset(data, "train", probe_transform(info)) if augment else plain, plain, opts)
    return train_images, {"val": val_images, "test": build_dataset(data, "test", eval_transform(info))}


ProbeData = tuple[Dataset, StepFn, dict[str, Callable[[], EvalResult]]]
"""What the probe trains on, its step, and its evaluation on each split."""


def augmented_probe(frozen: FrozenFeatures, train_images: Dataset, splits: dict[str, Dataset | None], batch: int,
                    env: Environment) -> ProbeData:
    """--augment: the frozen encoder runs on every augmented training batch."""

    def step(net: nn.Module, batch_data, generator: torch.Generator) -> StepOutput:
        imgs = batch_data[0].to(env.device, non_blocking=True)
        with torch.no_grad():
            features = frozen.encode(imgs)  # (B, D)
        return _probe_step(net, features, batch_data[1].to(env.device))

    return train_images, step, evaluators(frozen.model, splits, batch, env.device, frozen.data.num_workers)


def cached_probe(frozen: FrozenFeatures, train_images: Dataset, splits: dict[str, Dataset | None], batch: int,
                 env: Environment) -> ProbeData:
    """The features of every image are computed once; the head trains on them."""
    feats = cached_features(frozen, {"train": train_images, **splits}, batch, env)

    def step(net: nn.Module, batch_data, generator: torch.Generator) -> StepOutput:
        return _probe_step(net, batch_data[0].to(env.device), batch_data[1].to(env.device))

    return TensorDataset(*feats["train"]), step, feature_evaluators(frozen.model.head, feats, env.device)


def cached_features(frozen: FrozenFeatures, splits: dict[str, Dataset | None], batch: int,
                    env: Environment) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) of every split that exists, computed once by the frozen encoder."""
    sizes = ", ".join(f"{len(images)} {name}" for name, images in splits.items() if images is not None)
    logger.info("computing frozen features of %s images", sizes)
    with torch.autocast(env.device.type, dtype=env.amp_dtype or torch.float32, enabled=env.amp_dtype is not None):
        return {name: extract_features(frozen.encode, images, batch, env.device, f"{name} features",
                                       frozen.data.num_workers)
                for name, images in splits.items() if images is not None}


def feature_evaluators(head: nn.Module, feats: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       device: torch.device) -> dict[str, Callable[[], EvalResult]]:
    """The head's evaluation on the cached features of the validation (when held out) and test splits."""
    return evaluators(head, {name: TensorDataset(*feats[name]) if name in feats else None for name in ("val", "test")},
                      4096, device)


def _probe_step(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> StepOutput:
    logits = head(feats.float())  # (B, classes)
    accuracy = (logits.detach().argmax(1) == labels).float().mean() * 100
    return StepOutput(loss=F.cross_entropy(logits, labels), batch_size=feats.shape[0],
                      metrics={"train_top1": accuracy})
