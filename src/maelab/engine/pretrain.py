"""``maelab pretrain``: MAE pre-training wired onto the shared loop."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from maelab.data import (
    DataConfig,
    DatasetInfo,
    build_dataset,
    dataset_info,
    eval_transform,
    pretrain_transform,
)
from maelab.data.builders import first_items
from maelab.data.transforms import batch_flip_normalize, pretrain_crop_uint8
from maelab.engine.checkpoint import CheckpointMeta, load_checkpoint
from maelab.engine.checkpoint_store import (
    discard_after,
    find_resumable,
    remove_stale_temporaries,
    save_resumable,
)
from maelab.engine.config import PretrainConfig, from_jsonable, to_jsonable
from maelab.engine.distributed import agree, rank_rows
from maelab.engine.fsdp import (
    full_optimizer_state,
    full_state_dict,
    load_optimizer_state,
    shard_model,
)
from maelab.engine.knn import KnnMonitor
from maelab.engine.loop import (
    Environment,
    LoopState,
    Progress,
    StepOutput,
    TrainLoop,
    setup_environment,
)
from maelab.engine.optim import build_adamw
from maelab.engine.rundir import new_run_dir, open_log, read_json, write_json
from maelab.engine.seeding import train_loader
from maelab.engine.signals import TrainingInterrupted, graceful_stop
from maelab.engine.visualize import (
    reconstruct,
    save_loss_plot,
    save_reconstruction_grid,
)
from maelab.models import MAEConfig, MaskedAutoencoder, build_model, get_config
from maelab.targets import fit_pca, patchify

logger = logging.getLogger(__name__)

NUM_VIS_IMAGES = 8
# The PCA target's basis is fitted on patches of this many training images, at most this many patches.
PCA_FIT_IMAGES = 1000
PCA_FIT_PATCHES = 50_000
DEFAULT_EPOCHS = 3
# Options that may differ when a run is resumed; everything else comes from the run itself.
RESUMABLE_CHANGES = {
    ("loop", "epochs"), ("loop", "stop_after"), ("loop", "device"), ("loop", "log_every"), ("loop", "tensorboard"),
    ("data", "num_workers"),
    ("loop", "save_every_steps"), ("loop", "keep_last"), ("loop", "on_nonfinite"), ("loop", "max_nonfinite"),
    ("data", "max_bad_fraction"),
}
RESUMABLE_NAMES = ", ".join(f"--{name.replace('_', '-')}" for _, name in sorted(RESUMABLE_CHANGES))


def resolve_model_and_data(cfg: PretrainConfig) -> tuple[MAEConfig, DataConfig]:
    """The model config (preset + options; --img-size/--channels resize the model) and the
    data config that feeds it at the model's resolution and channel count."""
    overrides = cfg.options.overrides()
    if cfg.data.img_size is not None:
        overrides["img_size"] = cfg.data.img_size
    if cfg.data.channels is not None:
        overrides["in_chans"] = cfg.data.channels
    check_geometry(cfg, overrides)
    if cfg.data.data is not None and not cfg.data.data.exists():
        # Without this a typo would silently fall back to another copy of the dataset (or a download).
        raise ValueError(f"--data {cfg.data.data} does not exist; pass the directory that holds the {cfg.data.dataset} "
                         "data, or leave --data out to use the default locations")
    model_cfg = get_config(cfg.model, **overrides)
    height, width = model_cfg.img_size
    if height != width:
        raise ValueError(f"the CLI trains square images only; the model expects {height}x{width}")
    return model_cfg, dataclasses.replace(cfg.data, img_size=height, channels=model_cfg.in_chans)


def check_geometry(cfg: PretrainConfig, overrides: dict) -> None:
    """Reject option combinations the model cannot be built with, naming the options and the allowed values."""
    preset = get_config(cfg.model)  # raises for an unknown --model, listing the presets
    patch = preset.patch_size
    size = overrides.get("img_size", preset.img_size[0])
    if size % patch:
        raise ValueError(
            f"--img-size {size} is not a multiple of {cfg.model}'s patch size {patch}; allowed: multiples of "
            f"{patch}, e.g. {max(patch, size // patch * patch)} or {(size // patch + 1) * patch}"
        )
    width = overrides.get("decoder_embed_dim", preset.decoder_embed_dim)
    heads = overrides.get("decoder_num_heads", preset.decoder_num_heads)
    if width % heads:
        allowed = [h for h in range(1, width + 1) if width % h == 0]
        raise ValueError(
            f"--decoder-num-heads {heads} does not divide the decoder width --decoder-embed-dim {width}; "
            f"allowed head counts for width {width}: {allowed}"
        )
    if width % 4:
        raise ValueError(
            f"--decoder-embed-dim {width} must be a multiple of 4 (the 2-D sin-cos position embedding); "
            f"e.g. {width // 4 * 4 or 4} or {(width // 4 + 1) * 4}"
        )


def merge_resume(saved: PretrainConfig, given: PretrainConfig) -> PretrainConfig:
    """The saved run config, with the few options a resume may change taken from ``given``."""
    default = PretrainConfig()
    merged = saved
    for section in ("options", "data", "optim", "loop"):
        given_part, default_part = getattr(given, section), getattr(default, section)
        for f in dataclasses.fields(given_part):
            value = getattr(given_part, f.name)
            if value == getattr(default_part, f.name):
                continue
            if (section, f.name) not in RESUMABLE_CHANGES:
                raise ValueError(
                    f"--{f.name.replace('_', '-')} cannot change when resuming: the run keeps its own "
                    f"configuration (only {RESUMABLE_NAMES} may change)"
                )
            merged = dataclasses.replace(
                merged, **{section: dataclasses.replace(getattr(merged, section), **{f.name: value})}
            )
    # --stop-after and --fsdp belong to one invocation, never to the run (checkpoints are full either way).
    merged = dataclasses.replace(merged, loop=dataclasses.replace(merged.loop, stop_after=given.loop.stop_after),
                                 fsdp=given.fsdp)
    if given.model != default.model and given.model != saved.model:
        raise ValueError(f"--model cannot change when resuming (the run uses {saved.model})")
    return merged


def mae_step(env: Environment, device_augment: DatasetInfo | None = None):
    """The pre-training step; with ``device_augment`` the batch arrives uint8 and is flipped and normalized here.

    ``model`` may be the DDP wrapper of a MaskedAutoencoder or SimMIM.
    """

    def step(model, batch, generator: torch.Generator) -> StepOutput:
        imgs = batch[0].to(env.device, non_blocking=True)
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


def pretrain(cfg: PretrainConfig, resume: Path | None = None) -> Path:
    """Run (or resume) pre-training; returns the run directory."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").exists():
            raise ValueError(f"--resume {run_dir}: no config.json there; pass a maelab pretrain run directory")
        saved = from_jsonable(PretrainConfig, read_json(run_dir / "config.json"))
        cfg = merge_resume(saved, cfg)
        weights_path, state = find_resumable(run_dir)
        if state["epoch"] >= cfg.loop.epochs:
            raise ValueError(
                f"run {run_dir} already finished {state['epoch']} epochs; pass --epochs N with N > {state['epoch']}"
            )
    else:
        run_dir = new_run_dir(cfg.output_dir, f"pretrain-{cfg.model}")
        state = None
        if cfg.loop.epochs is None:
            cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, epochs=DEFAULT_EPOCHS))

    # Validate everything that can fail before any file is written.
    model_cfg, data_cfg = resolve_model_and_data(cfg)
    info = dataset_info(data_cfg)
    if cfg.device_augment and data_cfg.augment != "random_resized_crop":
        raise ValueError(f"--device-augment implements the default augmentation only, not --augment {data_cfg.augment}; "
                         "drop one of the two")
    train_set = build_dataset(data_cfg, "train", pretrain_crop_uint8(info) if cfg.device_augment
                              else pretrain_transform(info, data_cfg.augment))
    vis_set = build_dataset(data_cfg, "test", eval_transform(info))
    if len(train_set) < cfg.loop.batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than --batch-size {cfg.loop.batch_size}; "
            "lower --batch-size"
        )
    env = setup_environment(cfg.loop)
    if cfg.fsdp and env.world_size < 2:
        raise ValueError("--fsdp shards the model across the processes of a distributed launch, but this is one "
                         "process; launch with torchrun --nproc-per-node N (N >= 2) -m maelab pretrain ... --fsdp, "
                         "or drop --fsdp")
    make_loader, steps = train_loader(train_set, cfg.loop.batch_size, cfg.loop.seed, env, data_cfg.num_workers)
    run_dir = agree(run_dir)
    knn = KnnMonitor(data_cfg, info, env.device, cfg.loop.batch_size) if cfg.knn_every else None

    torch.manual_seed(cfg.loop.seed)
    model = build_model(model_cfg).to(env.device)
    if state is None and model_cfg.target == "pca":
        # The basis is fitted on normalized images: with --device-augment the training set yields uint8 crops.
        fit_set = build_dataset(data_cfg, "train", pretrain_transform(info)) if cfg.device_augment else train_set
        fit_pca_target(model, fit_set, cfg.loop.seed)
    progress, loop_state = Progress(), None
    if state is not None:
        weights, _ = load_checkpoint(weights_path, env.device)
        model.load_state_dict(weights)  # into the plain model: sharding keeps the values
    if cfg.fsdp:
        shard_model(model)
    optimizer = build_adamw(model, cfg.optim)  # after sharding, which replaces the parameters
    if state is not None:
        load_optimizer_state(model, optimizer, state["optimizer"])
        progress = Progress(epoch=state["epoch"], step=state["step"], iter=state.get("iter", 0))
        loop_state = LoopState.from_state(state.get("loop") or {}, env.device)
        if loop_state.dataset_size and loop_state.dataset_size != len(train_set):
            raise ValueError(
                f"the training set has {len(train_set)} images, but the run was trained on "
                f"{loop_state.dataset_size}; the data changed since the checkpoint, so the run cannot continue "
                "exactly. Restore the data, or start a new run"
            )
        if progress.iter and data_cfg.dataset == "shards" and saved.data.num_workers != data_cfg.num_workers:
            raise ValueError(
                f"{weights_path.name} was saved mid-epoch reading shards with --num-workers {saved.data.num_workers}; "
                "the stream's order depends on it, so continue with the same --num-workers (or from an epoch-end checkpoint)"
            )
        if progress.iter and loop_state.world_size != env.world_size:
            raise ValueError(
                f"{weights_path.name} was saved mid-epoch by {loop_state.world_size} process(es); continue it with "
                f"the same number (this run has {env.world_size}), or resume from an epoch-end checkpoint"
            )
        logger.info("resuming %s from %s: epoch %d, %d batches into it, optimizer step %d",
                    run_dir, weights_path.name, progress.epoch + 1, progress.iter, progress.step)

    if env.is_main:  # the other ranks write nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        if state is not None:
            discard_after(run_dir, progress.step)
        write_json(run_dir / "config.json", to_jsonable(cfg))
    # On resume, TensorBoard drops events after the checkpoint's step, as the JSONL log drops later records.
    log = open_log(run_dir, cfg.loop.tensorboard and env.is_main,
                   purge_step=progress.step + 1 if state is not None else None)
    if env.is_main:
        log.truncate_to(progress.epoch, progress.iter)
    vis_imgs = torch.stack([item[0] for item in first_items(vis_set, NUM_VIS_IMAGES)]).to(env.device)

    def meta(p: Progress) -> CheckpointMeta:
        return CheckpointMeta(kind="mae", model_config=model_cfg.to_dict(), data_info=to_jsonable(info),
                              epoch=p.epoch, extra={"model_name": cfg.model, "data": to_jsonable(data_cfg),
                                                    "step": p.step, "iter": p.iter})

    def on_epoch_end(epoch: int, record: dict) -> dict:
        # With --fsdp every rank comes here (the model's forward is a collective); only rank 0 writes.
        report = skipped_files_report(train_set)
        if (epoch + 1) % cfg.vis_every == 0 or epoch + 1 == cfg.loop.epochs:
            rec = reconstruct(model, vis_imgs, info.mean, info.std, seed=0)
            if env.is_main:
                grid = write_pictures(rec, model.config, run_dir, epoch + 1, log.records() + [record])
                log.image("reconstruction", grid, record["step"])
        if knn is not None and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.loop.epochs):
            report.update(knn(model))
        return report

    def save(p: Progress, state: LoopState) -> None:
        # Sharded: gather the full weights and optimizer state to rank 0 (collectives), so any world size loads them.
        weights = full_state_dict(model) if cfg.fsdp else model.state_dict()
        optim_state = full_optimizer_state(model, optimizer) if cfg.fsdp else optimizer.state_dict()
        if not env.is_main:
            return
        train_state = {"optimizer": optim_state, "epoch": p.epoch, "step": p.step, "iter": p.iter,
                       "loop": state.state_dict()}
        save_resumable(run_dir, p.step, weights, meta(p), train_state, cfg.loop.keep_last)

    accum = cfg.loop.accum_iter
    loop = TrainLoop(
        model=model, optimizer=optimizer, step_fn=mae_step(env, info if cfg.device_augment else None),
        make_loader=make_loader, steps_per_epoch=steps, loop=cfg.loop, optim=cfg.optim, env=env, log=log,
        effective_batch=cfg.loop.batch_size * accum * env.world_size, on_epoch_end=on_epoch_end, save=save,
        desc="pretrain", dataset_size=len(train_set), sharded=cfg.fsdp,
    )
    with graceful_stop() as loop.stop:
        try:
            loop.run(progress, loop_state)
        except TrainingInterrupted as exc:
            raise TrainingInterrupted(exc.signum, f"{exc}; continue with: maelab pretrain --resume {run_dir}") from None
    logger.info("run directory: %s", run_dir)
    return run_dir


def skipped_files_report(dataset) -> dict:
    """``{"skipped_files": n}`` (and a warning naming the first few) when a folder dataset skipped files."""
    bad = getattr(dataset, "bad_files", ())
    if not bad:
        return {}
    logger.warning("%d unreadable image files skipped so far (first: %s)", len(bad),
                   ", ".join(str(p) for p in bad[:5]))
    return {"skipped_files": len(bad)}


def write_pictures(rec, config: MAEConfig, run_dir: Path, epoch: int, records: list[dict]) -> Path:
    """Reconstruction grid ``rec`` (:func:`reconstruct`) of this epoch (recon_epochNNN.png, copied to
    recon.png) and loss.png; returns the grid's path."""
    path = run_dir / f"recon_epoch{epoch:03d}.png"
    save_reconstruction_grid(rec, path, title=f"epoch {epoch}, mask ratio {config.mask_ratio}")
    shutil.copyfile(path, run_dir / "recon.png")
    save_loss_plot(records, run_dir / "loss.png")
    return path
