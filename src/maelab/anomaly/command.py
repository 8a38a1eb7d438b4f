"""``maelab anomaly RUN --data test/``: score every image, draw the worst, measure when labels are known.

Writes into the run directory: ``scores.csv`` (one row per readable image: its identity, label, whether it is
anomalous, the reconstruction score and the kNN score), ``patch_errors.safetensors`` (key ``errors``, (N, h, w):
every image's patch errors on the patch grid, rows as in scores.csv), ``heatmaps.png`` (the ``--num-maps`` most
anomalous images under their patch errors), ``roc.png`` and, in ``anomaly.json``, AUROC and AUPRC of each score
(when the normal class is known), the settings and the unreadable files skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from maelab.anomaly.config import AnomalyConfig
from maelab.anomaly.data import Images, normal_images, normal_label, only_class, scored_images
from maelab.anomaly.figures import save_heatmap_grid, save_roc
from maelab.anomaly.metrics import Detection, detection
from maelab.anomaly.scoring import complementary_masks, image_scores, knn_score, patch_errors
from maelab.checkpoint import atomic_write
from maelab.data import DataConfig, DatasetInfo, eval_transform
from maelab.evaluate.classifier import classifier_config
from maelab.evaluate.embed import ImageOutputs, apply_to_sets, embed_images
from maelab.evaluate.features import ImageFn, frozen_features_fn
from maelab.evaluate.image_index import (
    INDEX_COLUMNS,
    ImageSet,
    class_names,
    csv_bytes,
    image_sets,
)
from maelab.evaluate.source import Pretrained, load_encoder
from maelab.models.classifier import build_vit
from maelab.options import resolved_layers
from maelab.train.config import to_jsonable
from maelab.train.environment import resolve_device
from maelab.train.rundir import new_run_dir, write_json
from maelab.visualize.reconstruct import load_mae

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (*INDEX_COLUMNS, "anomalous", "recon_score", "knn_score")


def embedding_fn(model: nn.Module, data: DataConfig, pool: str, layers: int, device: torch.device,
                 path: Path, mirror: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's encoder as ``maelab embed`` runs it (every patch visible, pooled by ``pool`` over the last
    ``layers`` blocks), with ``mirror`` averaged with its mirror image's: (B, C, H, W) -> (B, D)."""
    config = classifier_config(model.config, data, 0, global_pool=pool, head="none", layers=layers)
    vit = build_vit(config)
    load_encoder(vit, Pretrained(Path(path), model.config, model.encoder_state_dict(), {}, "mae"))
    encode = frozen_features_fn(vit.to(device).eval())
    return mirror_averaged(encode) if mirror else encode


def mirror_averaged(encode: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``encode`` made blind to left-right orientation: the mean of an image's and its mirror image's embedding."""
    return lambda imgs: (encode(imgs) + encode(imgs.flip(-1))) / 2  # (B, D)


def knn_bank(cfg: AnomalyConfig, normal: Images, scored: Images, label: int | None, info: DatasetInfo,
             transform: Callable[[torch.Tensor], torch.Tensor]) -> list[ImageSet]:
    """The normal images the kNN score compares with; with a known normal ``label`` on the very data being scored
    (the one-class protocol), only that class's images."""
    sets = image_sets(normal.data, info, transform, normal.split)
    same = (normal.data.dataset, normal.data.data) == (scored.data.dataset, scored.data.data)
    if cfg.train_data is None and same and label is not None:
        sets = [ImageSet(s.split, only_class(s.dataset, label)) for s in sets]
    if normal.overlaps(scored):
        logger.warning("the normal images of the kNN score (%s %s, %s) include the images scored: those score 0; "
                       "pass --train-data DIR of other normal images", normal.data.dataset, normal.data.data or "",
                       normal.split)
    return sets


def score_sets(model: nn.Module, encode: ImageFn | None, sets: list[ImageSet], masks: torch.Tensor,
               batch_size: int, device: torch.device, num_workers: int = 0) -> ImageOutputs:
    """Every readable image's patch errors ("errors", (N, L)) and, with ``encode``, its embedding ("features",
    (N, D)) in one pass over ``sets`` (:func:`maelab.evaluate.embed.apply_to_sets`)."""
    fns = {"errors": lambda imgs: patch_errors(model, imgs, masks)}
    if encode is not None:
        fns["features"] = encode
    return apply_to_sets(fns, sets, batch_size, device, num_workers, desc="anomaly")


def run_anomaly(cfg: AnomalyConfig) -> Path:
    """Score the images, write scores, maps and metrics; returns the output directory."""
    device = resolve_device(cfg.device)
    model, info, extra = load_mae(cfg.run, device, cfg.target)
    model.requires_grad_(False)
    saved = dict(extra.get("data") or {})
    scored = scored_images(cfg, saved, model.config)
    source = Path(cfg.run)
    run_dir = new_run_dir(cfg.output_dir, f"anomaly-{source.name if source.is_dir() else source.stem}")
    transform = eval_transform(info)
    sets = image_sets(scored.data, info, transform, scored.split)
    names = class_names(sets[0].dataset)
    normal = normal_label(names, cfg.normal_class)
    normal_set = normal_images(cfg, saved, scored) if cfg.knn else None
    layers = resolved_layers(cfg.layers, model.config.depth)
    encode = embedding_fn(model, scored.data, cfg.pool, layers, device, source, cfg.mirror) if normal_set else None
    masks = complementary_masks(model.config.num_patches, cfg.masks, torch.Generator().manual_seed(cfg.seed))

    result = score_sets(model, encode, sets, masks, cfg.batch_size, device, scored.data.num_workers)
    patch = result.outputs["errors"]  # (N, L)
    scores = {"recon": image_scores(patch, cfg.score, cfg.top_fraction)}  # (N,) each
    bad, knn = list(result.skipped), None
    if encode is not None:
        bank = embed_images(encode, knn_bank(cfg, normal_set, scored, normal, info, transform), cfg.batch_size,
                            device, scored.data.num_workers)
        scores["knn"] = knn_score(bank.features, result.outputs["features"], cfg.k, cfg.whiten, cfg.distance)
        bad += bank.skipped
        knn = dict(k=cfg.k, distance=cfg.distance, pool=cfg.pool, layers=layers, whiten=cfg.whiten,
                   mirror=cfg.mirror, normal_images=len(bank.rows), data=to_jsonable(normal_set.data),
                   split=normal_set.split)
    anomalous = (result.labels != normal) if normal is not None else None  # (N,)
    metrics: dict[str, Detection] = {}
    if anomalous is not None and 0 < int(anomalous.sum()) < len(anomalous):
        metrics = {name: detection(value.numpy(), anomalous.numpy()) for name, value in scores.items()}
    elif anomalous is not None:
        logger.warning("the scored images are all %s: AUROC/AUPRC need both", "anomalous" if anomalous.all() else
                       "normal")

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", to_jsonable(cfg))
    rows = [dict(row, anomalous="" if anomalous is None else int(anomalous[r]),
                 **{f"{name}_score": float(value[r]) for name, value in scores.items()})
            for r, row in enumerate(result.rows)]
    atomic_write(run_dir / "scores.csv", lambda f: f.write(csv_bytes(rows, SCORE_COLUMNS)))
    grid = patch.view(-1, *model.config.grid_size)  # (N, h, w)
    maps = safetensors_bytes({"errors": grid.contiguous()}, metadata={"rows": "as in scores.csv"})
    atomic_write(run_dir / "patch_errors.safetensors", lambda f: f.write(maps))
    worst = scores["recon"].argsort(descending=True)[:cfg.num_maps].tolist()
    if worst:
        mean, std = torch.tensor(info.mean).view(-1, 1, 1), torch.tensor(info.std).view(-1, 1, 1)  # (C, 1, 1)
        pictures = torch.stack([(images.dataset[i][0] * std + mean).clamp(0, 1)
                                for images, i in (result.where[r] for r in worst)])  # (n, C, H, W)
        captions = [f"#{n + 1} {float(scores['recon'][r]):.3g} {_name(rows[r])}" for n, r in enumerate(worst)]
        save_heatmap_grid(pictures, grid[worst], captions, run_dir / "heatmaps.png",
                          f"{source.name}: the {len(worst)} highest reconstruction scores ({cfg.score}, {cfg.masks} "
                          f"complementary masks); patch error in {model.config.target} space")
    if metrics:
        save_roc(metrics, run_dir / "roc.png", f"{source.name}: normal = {_class(names, normal)}")
    bad = list(dict.fromkeys(bad))
    write_json(run_dir / "anomaly.json", dict(
        source=str(cfg.run), target=model.config.target, images=len(rows), masks=cfg.masks,
        mask_ratio=1 - 1 / cfg.masks, seed=cfg.seed, score=cfg.score, top_fraction=cfg.top_fraction,
        normal_class=normal, normal_class_name=_class(names, normal), class_names=list(names),
        anomalous_images=None if anomalous is None else int(anomalous.sum()),
        data=to_jsonable(scored.data), split=scored.split, knn=knn,
        metrics={name: dict(auroc=m.auroc, auprc=m.auprc) for name, m in metrics.items()} or None,
        most_anomalous=[rows[r] for r in worst], skipped_files=len(bad), skipped_file_names=bad,
    ))
    if bad:
        logger.warning("%d unreadable image files skipped (listed in %s)", len(bad), run_dir / "anomaly.json")
    for name, m in metrics.items():
        logger.info("%s score: AUROC %.4f, AUPRC %.4f", name, m.auroc, m.auprc)
    logger.info("scored %d images; results in %s", len(rows), run_dir)
    return run_dir


def _class(names: tuple[str, ...], label: int | None) -> str | None:
    return None if label is None else (names[label] if label < len(names) else str(label))


def _name(row: dict) -> str:
    """A short name of a scored image in a caption: its class, and its file name or dataset index."""
    where = Path(row["path"]).name if row["path"] else f"{row['split']} #{row['index']}"
    return f"{row['class']} {where}".strip()
