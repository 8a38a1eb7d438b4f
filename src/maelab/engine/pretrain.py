"""``maelab pretrain``: MAE pre-training wired onto the shared loop."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from maelab.data import DataConfig, DatasetInfo, build_dataset, dataset_info, eval_transform, pretrain_transform
from maelab.engine.checkpoint import LAST, CheckpointMeta, load_checkpoint, load_train_state, save_checkpoint
from maelab.engine.config import PretrainConfig, from_jsonable, to_jsonable
from maelab.engine.knn import KnnMonitor
from maelab.engine.loop import Progress, StepOutput, TrainLoop, setup_environment, make_loader_fn
from maelab.engine.optim import build_adamw
from maelab.engine.rundir import JsonlLog, new_run_dir, read_json, write_json
from maelab.engine.visualize import reconstruct, save_loss_plot, save_reconstruction_grid
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
    ("loop", "epochs"), ("loop", "stop_after"), ("loop", "device"), ("loop", "log_every"), ("data", "num_workers"),
}


def resolve_model_and_data(cfg: PretrainConfig) -> tuple[MAEConfig, DataConfig]:
    """The model config (preset + options; --img-size/--channels resize the model) and the
    data config that feeds it at the model's resolution and channel count."""
    overrides = cfg.options.overrides()
    if cfg.data.img_size is not None:
        overrides["img_size"] = cfg.data.img_size
    if cfg.data.channels is not None:
        overrides["in_chans"] = cfg.data.channels
    model_cfg = get_config(cfg.model, **overrides)
    height, width = model_cfg.img_size
    if height != width:
        raise ValueError(f"the CLI trains square images only; the model expects {height}x{width}")
    return model_cfg, dataclasses.replace(cfg.data, img_size=height, channels=model_cfg.in_chans)


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
                    "configuration (only --epochs, --stop-after, --device, --num-workers and --log-every may change)"
                )
            merged = dataclasses.replace(
                merged, **{section: dataclasses.replace(getattr(merged, section), **{f.name: value})}
            )
    # --stop-after belongs to one invocation, never to the run.
    merged = dataclasses.replace(merged, loop=dataclasses.replace(merged.loop, stop_after=given.loop.stop_after))
    if given.model != default.model and given.model != saved.model:
        raise ValueError(f"--model cannot change when resuming (the run uses {saved.model})")
    return merged


def mae_step(device: torch.device):
    def step(model: MaskedAutoencoder, batch, generator: torch.Generator) -> StepOutput:
        imgs = batch[0].to(device, non_blocking=True)
        out = model(imgs, generator=generator)
        return StepOutput(loss=out.loss, batch_size=imgs.shape[0])

    return step


def fit_pca_target(model: MaskedAutoencoder, dataset: torch.utils.data.Dataset, seed: int) -> None:
    """Fit the "pca" target's basis on patches of a seeded sample of (augmented) training images."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(dataset), generator=gen)[:PCA_FIT_IMAGES].tolist()
    imgs = torch.stack([dataset[i][0] for i in picks])  # (N, C, H, W)
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
        state = load_train_state(run_dir / LAST)
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
    train_set = build_dataset(data_cfg, "train", pretrain_transform(info, data_cfg.augment))
    vis_set = build_dataset(data_cfg, "test", eval_transform(info))
    if len(train_set) < cfg.loop.batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than --batch-size {cfg.loop.batch_size}; "
            "lower --batch-size"
        )
    env = setup_environment(cfg.loop)
    knn = KnnMonitor(data_cfg, info, env.device, cfg.loop.batch_size) if cfg.knn_every else None

    torch.manual_seed(cfg.loop.seed)
    model = build_model(model_cfg).to(env.device)
    if state is None and model_cfg.target == "pca":
        fit_pca_target(model, train_set, cfg.loop.seed)
    optimizer = build_adamw(model, cfg.optim)
    progress = Progress()
    if state is not None:
        weights, _ = load_checkpoint(run_dir / LAST, env.device)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(epoch=state["epoch"], step=state["step"])
        logger.info("resuming %s at epoch %d", run_dir, progress.epoch + 1)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", to_jsonable(cfg))
    log = JsonlLog(run_dir / "log.jsonl")
    log.truncate_to_epoch(progress.epoch)
    vis_imgs = torch.stack([vis_set[i][0] for i in range(min(NUM_VIS_IMAGES, len(vis_set)))]).to(env.device)

    def meta(epoch: int) -> CheckpointMeta:
        return CheckpointMeta(kind="mae", model_config=model_cfg.to_dict(), data_info=to_jsonable(info),
                              epoch=epoch, extra={"model_name": cfg.model, "data": to_jsonable(data_cfg)})

    def on_epoch_end(epoch: int, record: dict) -> dict:
        if (epoch + 1) % cfg.vis_every == 0 or epoch + 1 == cfg.loop.epochs:
            write_pictures(model, vis_imgs, info, run_dir, epoch + 1, log.records() + [record])
        if knn is not None and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.loop.epochs):
            return knn(model)
        return {}

    def save(p: Progress) -> None:
        train_state = {"optimizer": optimizer.state_dict(), "epoch": p.epoch, "step": p.step}
        save_checkpoint(run_dir / LAST, model.state_dict(), meta(p.epoch), train_state)

    accum = cfg.loop.accum_iter
    loop = TrainLoop(
        model=model, optimizer=optimizer, step_fn=mae_step(env.device),
        make_loader=make_loader_fn(train_set, cfg.loop.batch_size, cfg.loop.seed, env, data_cfg.num_workers),
        steps_per_epoch=len(train_set) // cfg.loop.batch_size, loop=cfg.loop, optim=cfg.optim, env=env, log=log,
        effective_batch=cfg.loop.batch_size * accum * env.world_size, on_epoch_end=on_epoch_end, save=save,
        desc="pretrain",
    )
    loop.run(progress)
    logger.info("run directory: %s", run_dir)
    return run_dir


def write_pictures(
    model: MaskedAutoencoder, imgs: torch.Tensor, info: DatasetInfo, run_dir: Path, epoch: int, records: list[dict]
) -> None:
    """Reconstruction grid for this epoch (recon_epochNNN.png, copied to recon.png) and loss.png."""
    rec = reconstruct(model, imgs, info.mean, info.std, seed=0)
    path = run_dir / f"recon_epoch{epoch:03d}.png"
    save_reconstruction_grid(rec, path, title=f"epoch {epoch}, mask ratio {model.config.mask_ratio}")
    shutil.copyfile(path, run_dir / "recon.png")
    save_loss_plot(records, run_dir / "loss.png")
