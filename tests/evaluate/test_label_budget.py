"""--labels-per-class: a class-balanced, seeded label draw outside the validation split, a validation set of at
most K per class, unlabeled images for the statistics, and the same protocol in linprobe, knn and finetune."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.cli import main
from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform
from maelab.data.labels import class_counts
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.data import dataset_labels, split_train, unlabeled_pool, val_indices

SYNTH = ["--dataset", "synthetic", "--synthetic-size", "256"]


def _train_split():
    data = DataConfig(dataset="synthetic", synthetic_size=256)
    return build_dataset(data, "train", eval_transform(dataset_info(data)))


def test_the_draw_is_balanced_outside_the_validation_split_and_seeded():
    images = _train_split()
    opts = EvalDataOptions(labels_per_class=5, label_seed=0)
    train, val = split_train(images, images, opts)
    labels = dataset_labels(images)
    keep, held = val_indices(len(images), opts)
    assert set(train.indices) <= set(keep) and set(val.indices) <= set(held)
    assert class_counts(labels[train.indices], 4) == [5, 5, 5, 5]
    assert max(class_counts(labels[val.indices], 4)) <= 5 and len(val) <= 20
    again, _ = split_train(images, images, opts)
    other, _ = split_train(images, images, EvalDataOptions(labels_per_class=5, label_seed=1))
    assert again.indices == train.indices and other.indices != train.indices
    more, _ = split_train(images, images, EvalDataOptions(labels_per_class=10, label_seed=0))
    assert set(train.indices) < set(more.indices)  # nested across budgets
    assert len(unlabeled_pool(images, opts)) == len(keep)


def test_label_budget_options_are_checked():
    with pytest.raises(ValueError, match="give one of the two"):
        EvalDataOptions(labels_per_class=5, train_subset=100)
    with pytest.raises(ValueError, match="at least 1"):
        EvalDataOptions(labels_per_class=0)
    images = _train_split()
    with pytest.raises(ValueError, match="lower --labels-per-class"):
        split_train(images, images, EvalDataOptions(labels_per_class=1000))


def test_linprobe_and_knn_record_the_budget_and_use_unlabeled_statistics(tmp_path):
    probe, knn = tmp_path / "probe", tmp_path / "knn"
    budget = ["--labels-per-class", "4", "--label-seed", "2"]
    assert main(["linprobe", "--init", "pixels", *SYNTH, *budget, "--output-dir", str(probe)]) == 0
    metrics = json.loads((probe / "metrics.json").read_text())
    assert metrics["labels_per_class"] == 4 and metrics["label_seed"] == 2
    assert metrics["train_images"] == 16 and metrics["val_images"] <= 16
    assert metrics["statistics_images"] > 200  # every training image outside the validation split
    config = json.loads((probe / "config.json").read_text())
    assert config["data"]["labels_per_class"] == 4 and config["data"]["label_seed"] == 2
    assert main(["knn", "--init", "pixels", *SYNTH, *budget, "--whiten", "32", "--output-dir", str(knn)]) == 0
    record = json.loads((knn / "knn.json").read_text())
    assert record["train_images"] == 16 and record["labels_per_class"] == 4  # 32 components: fit on unlabeled


def test_the_probe_standardizes_with_every_training_image(tmp_path):
    """The probe's BatchNorm statistics are the unlabeled pool's, not the 16 labeled images'."""
    from maelab.evaluate.classifier import load_classifier

    run = tmp_path / "probe"
    assert main(["linprobe", "--init", "pixels", *SYNTH, "--labels-per-class", "4", "--output-dir", str(run)]) == 0
    model, _ = load_classifier(run)[:2]
    images = _train_split()
    pool = torch.stack([images[i][0].flatten() for i in unlabeled_pool(images, EvalDataOptions()).indices])
    torch.testing.assert_close(model.head[0].running_mean, pool.mean(0), rtol=1e-4, atol=1e-5)
