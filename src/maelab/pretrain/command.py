"""``maelab pretrain``: MAE pre-training wired onto the shared loop."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from maelab.checkpoint import CheckpointMeta, read_meta
from maelab.data import DataConfig, DatasetInfo, build_dataset, dataset_info, eval_transform, pretrain_transform
from maelab.data.builders import first_items
from maelab.data.encoded_folder import build_encoded_folder, collate_encoded
from maelab.data.folder import skipped_files_report
from maelab.data.transforms import batch_flip_normalize, pretrain_crop_uint8
from maelab.evaluate.knn import KnnMonitor
from maelab.models import MAEConfig, MaskedAutoencoder, build_model, get_config
from maelab.models.config import InvalidConfig
from maelab.models.registry import DEFAULT_MODEL
from maelab.pretrain.config import PretrainConfig, check_fsdp_schedule, with_default_schedule
from maelab.pretrain.init import InitSource, init_architecture, load_init, read_init
from maelab.targets import fit_pca, patchify
from maelab.train.budget import EpochWork
from maelab.train.config import to_jsonable
from maelab.train.device_decode import DeviceDecoder, check_decode_on_device
from maelab.train.distributed import rank_rows
from maelab.train.environment import Environment
from maelab.train.fsdp import build_sharded
from maelab.train.loader import TrainData
from maelab.train.loop import StepOutput
from maelab.train.optim import build_adamw
from maelab.train.resume import ResumePoint, save_point
from maelab.train.rundir import JsonlLog
from maelab.train.spine import Built, RunHooks, TimedWork, TrainingBuilders, TrainingData, run_training
from maelab.train.state import LoopState, Progress
from maelab.visualize.figures import reconstruct, save_loss_plot, save_reconstruction_grid

logger = logging.getLogger(__name__)

NUM_VIS_IMAGES = 8
# The PCA target's basis is fitted on patches of this many training images, at most this many patches.
PCA_FIT_IMAGES = 1000
PCA_FIT_PATCHES = 50_000


def resolve_model_and_data(cfg: PretrainConfig, source: MAEConfig | None = None) -> tuple[MAEConfig, DataConfig]:
    """The model config (preset + options, or with --init the ``source``'s architecture + options;
    --img-size/--channels resize the model) and the data config that feeds it at the model's resolution
    and channel count."""
    assert source is not None or cfg.init is None, "an --init run's architecture comes from its source"
    overrides = cfg.options.overrides()
    if cfg.data.img_size is not None:
        overrides["img_size"] = cfg.data.img_size
    if cfg.data.channels is not None:
        overrides["in_chans"] = cfg.data.channels
    if cfg.data.data is not None and not cfg.data.data.exists():
        # Without this a typo would silently fall back to another copy of the dataset (or a download).
        raise ValueError(f"--data {cfg.data.data} does not exist; pass the directory that holds the {cfg.data.dataset} "
                         "data, or leave --data out to use the default locations")
    try:
        model_cfg = get_config(cfg.model or DEFAULT_MODEL, **overrides) if source is None else \
            init_architecture(source, cfg.model, overrides, cfg.init)
    except InvalidConfig as exc:
        raise ValueError(exc.render(lambda name, value: f"{option_flag(name)} {value}")) from None
    height, width = model_cfg.img_size
    if height != width:
        raise ValueError(f"the CLI trains square images only; the model expects {height}x{width}")
    return model_cfg, dataclasses.replace(cfg.data, img_size=height, channels=model_cfg.in_chans)


def architecture_source(cfg: PretrainConfig, init: InitSource | None, point: ResumePoint | None
                        ) -> tuple[MAEConfig | None, str]:
    """What an --init run's architecture starts from (None for a preset's run) and the model's name.

    A resumed --init run takes both from its own checkpoint: the source may have moved since.
    """
    if init is not None:
        return init.model.config, cfg.model or init.model.name
    if cfg.init is None:
        return None, str(cfg.model)
    meta = read_meta(point.weights)
    return MAEConfig.from_dict(meta.model_config), cfg.model or str(meta.extra.get("model_name", "mae"))


def option_flag(field_name: str) -> str:
    """The command-line option that sets an MAEConfig field."""
    return "--channels" if field_name == "in_chans" else "--" + field_name.replace("_", "-")


def mae_step(env: Environment, device_augment: DatasetInfo | None = None, decoder: DeviceDecoder | None = None):
    """The pre-training step; with ``device_augment`` the batch arrives uint8 and is flipped and normalized here;
    with ``decoder`` (``--decode-on-device``, with ``device_augment``) it arrives as JPEG bytes and crop boxes.

    ``model`` may be the DDP wrapper of a MaskedAutoencoder or SimMIM.
    """

    def step(model, batch, generator: torch.Generator) -> StepOutput:
        imgs = decoder(batch) if decoder is not None else batch[0].to(env.device, non_blocking=True)
        world = env.world_size
        if device_augment is not None:
            # Flips drawn for the whole global batch, like the masks: the same for any world size.
            coins = torch.rand(imgs.shape[0] * world, device=env.device, generator=generator)  # (N*B,)
            flip = rank_rows(coins, env.rank, world) < 0.5  # (B,)
            imgs = batch_flip_normalize(imgs, device_augment.mean, device_augment.std, flip)  # (B, C, H, W)
        if world == 1:
            out = model(imgs, generator=generator)
        else:
            # Draw the whole global batch's masks and keep this rank's rows: the same masks as one process.
            plain = getattr(model, "module", model)
            sample = plain.sample_mask(imgs.shape[0] * world, generator=generator, device=env.device)
            out = model(imgs, mask=rank_rows(sample.mask, env.rank, world))  # mask: (B, L)
        return StepOutput(loss=out.loss, batch_size=imgs.shape[0])

    return step


def fit_pca_target(model: MaskedAutoencoder, dataset: torch.utils.data.Dataset, seed: int) -> None:
    """Fit the "pca" target's basis on patches of a seeded sample of (augmented) training images."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(dataset, torch.utils.data.IterableDataset):  # shards are written in random order
        items = first_items(dataset, PCA_FIT_IMAGES)
    else:
        items = [dataset[i] for i in torch.randperm(len(dataset), generator=gen)[:PCA_FIT_IMAGES].tolist()]
    imgs = torch.stack([item[0] for item in items])  # (N, C, H, W)
    patches = patchify(imgs, model.config.patch_size).flatten(0, 1)  # (N*L, P)
    patches = patches[torch.randperm(patches.shape[0], generator=gen)[:PCA_FIT_PATCHES]]  # (M, P)
    basis = fit_pca(patches, model.config.num_pca_components)
    model.set_pca_basis(basis)
    kept = float(basis.variance.sum() / patches.shape[1])
    logger.info("PCA target: %d components fitted on %d patches keep %.1f%% of the standardized variance",
                basis.components.shape[0], patches.shape[0], 100 * kept)


@dataclass(frozen=True)
class PretrainData:
    """What pretrain's builders share."""

    name: str
    model_cfg: MAEConfig
    data_cfg: DataConfig
    info: DatasetInfo
    init: InitSource | None
    """A new --init run's source (None for a preset's run and on resume)."""
    vis_imgs: torch.Tensor
    """(8, C, H, W) test images on the device, reconstructed at epoch ends."""
    knn: KnnMonitor | None
    meta: Callable[[Progress], CheckpointMeta]


def pretrain_data(cfg: PretrainConfig, point: ResumePoint | None, env: Environment) -> TrainingData:
    """The model's and the data's configs, the training images, the pictures' images and the kNN monitor."""
    # Validate everything that can fail before any file is written.
    init = read_init(cfg.init) if point is None and cfg.init is not None else None
    if point is None:
        cfg = dataclasses.replace(cfg, model=cfg.model or (None if init else DEFAULT_MODEL),
                                  init_sha256=init.sha256 if init else None)
    source, name = architecture_source(cfg, init, point)
    model_cfg, data_cfg = resolve_model_and_data(cfg, source)
    info = dataset_info(data_cfg)
    train_set = pretrain_dataset(cfg, data_cfg, info)
    vis_set = build_dataset(data_cfg, "test", eval_transform(info))
    vis_imgs = torch.stack([item[0] for item in first_items(vis_set, NUM_VIS_IMAGES)]).to(env.device)
    knn = KnnMonitor(data_cfg, info, env.device, cfg.loop.batch_size) if cfg.knn_every else None
    context = PretrainData(name, model_cfg, data_cfg, info, init, vis_imgs, knn,
                           partial(mae_meta, name, model_cfg, info, data_cfg))
    return TrainingData(cfg, train_set, f"pretrain-{name}", data_cfg.num_workers,
                        collate_encoded if cfg.decode_on_device else None, context)


def pretrain_step(cfg: PretrainConfig, data: TrainingData, env: Environment):
    """:func:`mae_step` for the batches the training set yields (uint8 crops or JPEG bytes, or ready images)."""
    check_fsdp_schedule(cfg)
    pre: PretrainData = data.context
    decoder = DeviceDecoder(data.train_set, pre.info, env.device) if cfg.decode_on_device else None
    return mae_step(env, pre.info if cfg.device_augment or cfg.decode_on_device else None, decoder)


def pretrain_model(cfg: PretrainConfig, data: TrainingData, env: Environment, point: ResumePoint | None) -> Built:
    pre: PretrainData = data.context
    pca_fit_set = pca_images(cfg, pre.model_cfg, pre.data_cfg, pre.info, data.train_set) if point is None else None
    return Built(build_pretrain_model(cfg, pre.model_cfg, pca_fit_set, env, pre.init))


def epoch_report(cfg: PretrainConfig, data: TrainingData, env: Environment, model: torch.nn.Module, run_dir: Path,
                 epochs: int, knn: KnnMonitor | None) -> EpochReport:
    pre: PretrainData = data.context
    return EpochReport(cfg, epochs, model, data.train_set, pre.vis_imgs, pre.info, knn, run_dir, env.is_main)


def pretrain_hooks(cfg: PretrainConfig, data: TrainingData, env: Environment, run_dir: Path, built: Built,
                   optimizer: torch.optim.Optimizer, loader: TrainData) -> RunHooks:
    """A resumable checkpoint at every save point; pictures (and kNN) at epoch ends."""
    pre: PretrainData = data.context
    model = built.trained

    def save(p: Progress, state: LoopState) -> None:
        save_point(run_dir, model, optimizer, pre.meta(p), cfg.loop.keep_last, p, state, write=env.is_main)

    epochs = cfg.loop.schedule_epochs(math.ceil(loader.steps / cfg.loop.accum_iter))
    return RunHooks(save=save, on_epoch_end=epoch_report(cfg, data, env, model, run_dir, epochs, pre.knn))


def pretrain_timed_work(cfg: PretrainConfig, data: TrainingData, env: Environment, _) -> TimedWork:
    pre: PretrainData = data.context
    return timed_work(cfg, partial(epoch_report, cfg, data, env), pre.knn, pre.meta, env.is_main)


BUILDERS = TrainingBuilders(
    command="pretrain", default_epochs=None, dataset=pretrain_data, model=pretrain_model,
    optimizer=lambda cfg, model: build_adamw(model, cfg.optim), step=pretrain_step, hooks=pretrain_hooks,
    timed_work=pretrain_timed_work,
)


def pretrain(cfg: PretrainConfig, resume: Path | None = None) -> Path:
    """Run (or resume) pre-training; returns the run directory.

    A new run without --epochs or --steps trains for --time-budget (default 10m, counted from here):
    its steps are planned after everything is loaded and built, from the measured costs
    (:func:`~maelab.train.budget.plan_budget`).
    """
    run_dir = run_training(with_default_schedule(cfg) if resume is None else cfg, resume, BUILDERS)
    logger.info("run directory: %s", run_dir)
    return run_dir


def mae_meta(name: str, model_cfg: MAEConfig, info: DatasetInfo, data_cfg: DataConfig, p: Progress) -> CheckpointMeta:
    """A pre-training checkpoint's metadata at ``p``: what ``maelab.interop.load_source`` reads back."""
    return CheckpointMeta(kind="mae", model_config=model_cfg.to_dict(), data_info=to_jsonable(info), epoch=p.epoch,
                          extra={"model_name": name, "data": to_jsonable(data_cfg), "step": p.step, "iter": p.iter})


def timed_work(cfg: PretrainConfig, report, knn: KnnMonitor | None, meta, write: bool
               ) -> tuple[list[tuple[EpochWork, int]], EpochWork]:
    """What a run does between its steps, as --time-budget times it on the model's copy, writing into its
    throw-away directory: the pictures (every --vis-every epochs) and kNN (--knn-every) of an epoch end, and a
    checkpoint. ``report(model, directory, epochs, knn)`` makes an :class:`EpochReport`; ``meta`` a checkpoint's
    metadata."""

    def pictures(model, _, log: JsonlLog) -> None:
        report(model, log.path.parent, 1, None)(0, dict(event="epoch", epoch=0, step=1, loss=1.0), log)

    def checkpoint(model, optimizer, log: JsonlLog) -> None:
        at = Progress(epoch=1, step=1)
        save_point(log.path.parent, model, optimizer, meta(at), 1, at, LoopState(), write=write)

    work: list[tuple[EpochWork, int]] = [(pictures, cfg.vis_every)]
    if knn is not None:
        work.append((lambda model, _, __: knn(model), cfg.knn_every))
    return work, checkpoint


def pca_images(cfg: PretrainConfig, model_cfg: MAEConfig, data_cfg: DataConfig, info: DatasetInfo,
               train_set: torch.utils.data.Dataset) -> torch.utils.data.Dataset | None:
    """The normalized training images a "pca" target's basis is fitted on (None for other targets):
    with --device-augment or --decode-on-device the training set yields uint8 crops or bytes instead."""
    if model_cfg.target != "pca":
        return None
    return build_dataset(data_cfg, "train", pretrain_transform(info)) if cfg.device_augment or cfg.decode_on_device \
        else train_set


def build_pretrain_model(cfg: PretrainConfig, model_cfg: MAEConfig, pca_fit_set: torch.utils.data.Dataset | None,
                         env: Environment, init: InitSource | None = None) -> torch.nn.Module:
    """The model on its device (FSDP-sharded with --fsdp); a new "pca"-target run fits its basis on
    ``pca_fit_set`` (normalized images; None for other targets and when resuming: the basis is in the checkpoint);
    a new --init run then takes the source's weights (its decoder's basis too, when the decoder fits)."""

    def build(materialize: bool) -> torch.nn.Module:
        model = build_model(model_cfg)
        if materialize and pca_fit_set is not None:
            fit_pca_target(model, pca_fit_set, cfg.loop.seed)  # on the CPU: fit_pca works there
        if materialize and init is not None:
            load_init(model, init.model)
        return model

    torch.manual_seed(cfg.loop.seed)
    return build_sharded(build, env.device, env.is_main) if cfg.fsdp else build(True).to(env.device)


class EpochReport:
    """Pre-training's epoch hook: skipped files, the reconstruction grid and loss curve, kNN when asked.

    With --fsdp every rank comes here (the model's forward is a collective); only ``write`` writes.
    """

    def __init__(self, cfg: PretrainConfig, epochs: int, model: torch.nn.Module, train_set, vis_imgs: torch.Tensor,
                 info: DatasetInfo, knn: KnnMonitor | None, run_dir: Path, write: bool) -> None:
        self.cfg, self.epochs, self.model, self.train_set, self.vis_imgs = cfg, epochs, model, train_set, vis_imgs
        self.info, self.knn, self.run_dir, self.write = info, knn, run_dir, write

    def __call__(self, epoch: int, record: dict, log: JsonlLog) -> dict:
        report = skipped_files_report(self.train_set)
        # A schedule in optimizer steps ends at its last step even when a resume on another world size changed
        # the epochs' length (then the epoch count computed at the start is off).
        steps = self.cfg.loop.steps
        last = record.get("step") == steps if steps is not None else epoch + 1 == self.epochs
        if (epoch + 1) % self.cfg.vis_every == 0 or last:
            rec = reconstruct(self.model, self.vis_imgs, self.info.mean, self.info.std, seed=0)
            if self.write:
                grid = write_pictures(rec, self.model.config, self.run_dir, epoch + 1, log.records() + [record])
                log.image("reconstruction", grid, record["step"])
        if self.knn is not None and ((epoch + 1) % self.cfg.knn_every == 0 or last):
            report.update(self.knn(self.model))
        return report


def pretrain_dataset(cfg: PretrainConfig, data_cfg: DataConfig, info: DatasetInfo) -> torch.utils.data.Dataset:
    """The training images as the step expects them: augmented tensors, uint8 crops (--device-augment)
    or JPEG bytes with crop boxes (--decode-on-device)."""
    if cfg.device_augment and data_cfg.augment != "random_resized_crop":
        raise ValueError("--device-augment implements the default augmentation only, "
                         f"not --augment {data_cfg.augment}; drop one of the two")
    if cfg.decode_on_device:
        check_decode_on_device(data_cfg)
        return build_encoded_folder(data_cfg, info)
    return build_dataset(data_cfg, "train", pretrain_crop_uint8(info) if cfg.device_augment
                         else pretrain_transform(info, data_cfg.augment))


def write_pictures(rec, config: MAEConfig, run_dir: Path, epoch: int, records: list[dict]) -> Path:
    """Reconstruction grid ``rec`` (:func:`reconstruct`) of this epoch (recon_epochNNN.png, copied to
    recon.png) and loss.png; returns the grid's path."""
    path = run_dir / f"recon_epoch{epoch:03d}.png"
    save_reconstruction_grid(rec, path, title=f"epoch {epoch}, mask ratio {config.mask_ratio}")
    shutil.copyfile(path, run_dir / "recon.png")
    save_loss_plot(records, run_dir / "loss.png")
    return path
