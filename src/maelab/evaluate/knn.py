"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, as in DINO).

Each test feature votes with its k most cosine-similar train features; a neighbour of class c
adds exp(similarity / T) to class c's score. ``maelab knn`` runs it once on a checkpoint;
:class:`KnnMonitor` runs it on fixed subsets of the training images and of the validation split held out of
them during pre-training (``--knn-every``).
``--init none`` / ``--init pixels`` give the random-encoder and raw-pixel baselines. ``--whiten n``
first projects every feature on the bank's top n principal components, each scaled to unit variance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from maelab.data import DataConfig, DatasetInfo, build_dataset, eval_transform
from maelab.data.folder import skipped_files_report, skipped_files_summary
from maelab.evaluate.config import EvalDataOptions, KnnConfig
from maelab.evaluate.data import fixed_subset, split_train, unlabeled_pool
from maelab.evaluate.features import extract_features, frozen_features
from maelab.evaluate.metrics import EvalResult, result_from_scores, save_confusion_matrix
from maelab.models import MaskedAutoencoder
from maelab.targets import principal_axes
from maelab.train.config import LoopConfig, to_jsonable
from maelab.train.environment import setup_environment
from maelab.train.rundir import new_run_dir, open_log, write_json

logger = logging.getLogger(__name__)

MONITOR_TRAIN_IMAGES = 5000
MONITOR_QUERY_IMAGES = 2000
_CHUNK = 1024  # test features per similarity matrix: bounds memory at 1024 x N_train floats


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07,
) -> torch.Tensor:
    """Class scores (N_test, C) of weighted kNN with cosine similarity.

    Args:
        train_feats: (N_train, D); train_labels: (N_train,) in [0, C); test_feats: (N_test, D).
    """
    bank = F.normalize(train_feats.float(), dim=1)  # (N_train, D)
    labels = train_labels.to(bank.device).long()
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, test_feats.shape[0], _CHUNK):
        query = F.normalize(test_feats[start:start + _CHUNK].float().to(bank.device), dim=1)  # (b, D)
        sims, index = (query @ bank.T).topk(k, dim=1)  # (b, k) each
        weights = (sims / temperature).exp()  # (b, k)
        scores = torch.zeros(query.shape[0], num_classes, device=bank.device)  # (b, C)
        out.append(scores.scatter_add_(1, labels[index], weights))
    return torch.cat(out)  # (N_test, C)


def pca_whitener(train_feats: torch.Tensor, components: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, D) -> (N, components): centered, projected on the top principal components of ``train_feats`` (N_train, D)
    and divided by their standard deviations, so no few high-variance directions dominate the cosine similarity.

    The (D, D) covariance's exact eigendecomposition in float64 (:func:`maelab.targets.principal_axes`).
    """
    n, dim = train_feats.shape
    if not 1 <= components <= min(dim, n - 1):
        raise ValueError(f"--whiten {components}: needs 1 to min(feature dim {dim}, train images - 1 = {n - 1}) "
                         "components; pass a smaller --whiten or drop it")
    x = train_feats.double()
    mean = x.mean(0)  # (D,)
    variances, vectors = principal_axes(x - mean)  # (D,), (D, D), largest first
    top_var, top_vec = variances[:components], vectors[:, :components]  # (n,), (D, n)
    scale = top_var.clamp_min(top_var[0] * 1e-12).rsqrt()  # (n,)

    def whiten(feats: torch.Tensor) -> torch.Tensor:
        return ((feats.double().to(mean.device) - mean) @ top_vec * scale).float()  # (N, n)

    return whiten


def knn_evaluate(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], num_classes: int,
    k: int = 20, temperature: float = 0.07,
) -> EvalResult:
    """Top-1/top-5 and the confusion matrix of kNN on (features, labels) pairs."""
    if (train[1] < 0).any() or (test[1] < 0).any():
        raise ValueError("kNN needs labeled images; this dataset has unlabeled ones (label -1)")
    scores = knn_scores(train[0], train[1], test[0], num_classes, k, temperature)
    return result_from_scores(scores.cpu(), test[1].long(), math.nan)


class KnnMonitor:
    """kNN accuracy of a pre-training MAE's cls token on the validation split: up to 5000 training images as the
    bank, up to 2000 of the images held out of the training split (the evaluation commands' validation split,
    --val-fraction 0.1) as queries. The test split is left for the reports, as everywhere else."""

    def __init__(self, data: DataConfig, info: DatasetInfo, device: torch.device, batch_size: int) -> None:
        if info.num_classes < 2:
            raise ValueError(f"--knn-every needs a labeled dataset; {data.dataset} has {info.num_classes} classes")
        transform = eval_transform(info)
        images = build_dataset(data, "train", transform)
        if isinstance(images, IterableDataset):
            # Streamed shards cannot hold images out by index: the test split is all there is to query.
            logger.warning("--knn-every: shards are streamed, so no validation split can be held out of them; "
                           "kNN is monitored on the test split")
            train, queries, self.split = images, build_dataset(data, "test", transform), "test"
        else:
            train, queries = split_train(images, images, EvalDataOptions())
            self.split = "validation"
        self.train = fixed_subset(train, MONITOR_TRAIN_IMAGES)
        self.queries = fixed_subset(queries, MONITOR_QUERY_IMAGES)
        self.num_classes, self.device, self.batch_size = info.num_classes, device, batch_size

    def __call__(self, model: MaskedAutoencoder) -> dict[str, float]:
        was_training = model.training
        model.eval()
        encode = lambda imgs: model.forward_encoder(imgs, None)[:, 0]  # noqa: E731  (B, D) cls token
        train = extract_features(encode, self.train, self.batch_size, self.device, "knn train")
        queries = extract_features(encode, self.queries, self.batch_size, self.device, f"knn {self.split}")
        model.train(was_training)
        result = knn_evaluate(train, queries, self.num_classes)
        logger.info("kNN on the %s split (k=20, %d training images as the bank, %d %s images): top-1 %.2f%%",
                    self.split, len(self.train), len(self.queries), self.split, result.top1)
        return {"knn_top1": result.top1, "knn_top5": result.top5}


def run_knn(cfg: KnnConfig) -> Path:
    """Classify the validation and test splits by kNN on the training images' features; returns the run directory.

    ``--init none`` uses a random encoder of the same architecture (seeded by ``--seed``),
    ``--init pixels`` the flattened normalized pixels: see :func:`maelab.evaluate.features.frozen_features`.
    """
    env = setup_environment(LoopConfig(device=cfg.device))
    frozen = frozen_features(cfg.init, cfg.checkpoint, cfg.model, cfg.data, cfg.pool, "none", cfg.seed, env.device,
                             "knn", cfg.layers)
    data_cfg, info, encode = frozen.data, frozen.info, frozen.encode
    transform = eval_transform(info)
    images = build_dataset(data_cfg, "train", transform)  # one dataset: both parts use the same transform
    train_set, val_set = split_train(images, images, cfg.data)
    splits = {"train": train_set, "val": val_set, "test": build_dataset(data_cfg, "test", transform)}
    run_dir = new_run_dir(cfg.output_dir, f"knn-{frozen.name}")
    with torch.autocast(env.device.type, dtype=env.amp_dtype or torch.float32, enabled=env.amp_dtype is not None):
        feats = {name: extract_features(encode, images, cfg.batch_size, env.device, f"{name} features",
                                        data_cfg.num_workers) for name, images in splits.items() if images is not None}
    if cfg.whiten is not None:
        # With a label budget the whitening is fit on every training image, labeled or not (it needs no label,
        # and K images per class cannot support hundreds of components).
        fit_on = (extract_features(encode, unlabeled_pool(images, cfg.data), cfg.batch_size, env.device,
                                   "unlabeled features", data_cfg.num_workers)[0]
                  if cfg.data.labels_per_class is not None else feats["train"][0])
        whiten = pca_whitener(fit_on, cfg.whiten)
        feats = {name: (whiten(x), labels) for name, (x, labels) in feats.items()}
    # The training images (minus the validation split) are the bank; both held-out splits are queries.
    results = {name: knn_evaluate(feats["train"], feats[name], info.num_classes, cfg.k, cfg.temperature)
               for name in ("val", "test") if name in feats}
    result = results["test"]

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", to_jsonable(cfg))
    record = dict(event="knn", top1=result.top1, top5=result.top5, k=cfg.k, temperature=cfg.temperature,
                  train_images=len(train_set), test_images=len(splits["test"]), pool=cfg.pool, layers=frozen.layers,
                  init=cfg.init, whiten=cfg.whiten, labels_per_class=cfg.data.labels_per_class,
                  label_seed=cfg.data.label_seed,
                  feature_dim=frozen.dim, **skipped_files_report(*splits.values()))
    if "val" in results:
        record.update(val_top1=results["val"].top1, val_top5=results["val"].top5, val_images=len(val_set))
    open_log(run_dir, cfg.tensorboard).write(record)
    write_json(run_dir / "knn.json", dict(record, **frozen.provenance, **skipped_files_summary(*splits.values()),
                                          class_names=list(info.class_names),
                                          confusion_matrix=result.confusion.tolist()))
    save_confusion_matrix(result.confusion, info.class_names, run_dir / "confusion.png",
                          f"kNN (k={cfg.k}, T={cfg.temperature}) {frozen.name}: top-1 {result.top1:.2f}%")
    val = f"val top-1 {results['val'].top1:.2f}%, " if "val" in results else ""
    logger.info("kNN %stest top-1 %.2f%%, top-5 %.2f%%; run directory %s", val, result.top1, result.top5, run_dir)
    return run_dir
