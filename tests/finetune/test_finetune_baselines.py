"""The supervised baselines through the fine-tuning loop (--arch, a timm CNN from scratch), label budgets, the
evaluation cadence and the test split scored once with the checkpoint chosen on validation."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from maelab.cli import main
from maelab.data.labels import class_counts
from maelab.evaluate.classifier import load_classifier
from maelab.finetune.command import eval_every
from maelab.finetune.config import FinetuneConfig

CNN = ["finetune", "--init", "none", "--arch", "resnet18", "--dataset", "synthetic", "--synthetic-size", "256",
       "--batch-size", "16", "--mixup", "0", "--cutmix", "0", "--warmup-epochs", "0", "--no-tensorboard"]


def _epochs(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]


def test_a_timm_cnn_trains_on_a_label_budget_and_exports(tmp_path):
    run = tmp_path / "cnn"
    assert main([*CNN, "--labels-per-class", "8", "--epochs", "3", "--eval-every", "2",
                 "--output-dir", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["arch"] == "resnet18" and metrics["layer_decay"] == 1.0  # no ViT recipe inherited
    assert metrics["labels_per_class"] == 8 and metrics["train_images"] == 32
    # Evaluated at epoch 2 (every 2) and at the last, 3; test scored once, for the chosen checkpoint only.
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert "top1" in metrics["best"] and all("top1" not in e for e in metrics["epochs"])
    assert all("test_top1" not in r for r in _epochs(run))
    model, meta = load_classifier(run / "checkpoint-best.safetensors")
    assert meta.model_config["kind"] == "cnn" and model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)
    out = tmp_path / "cnn.safetensors"
    assert main(["export", str(run / "checkpoint-best.safetensors"), "--to", "timm", "-o", str(out)]) == 0
    stock = timm.create_model("resnet18", in_chans=1, num_classes=4)
    weights = load_file(str(out))
    assert weights.keys() == stock.state_dict().keys()
    assert weights["conv1.weight"].shape == (64, 1, 3, 3)  # the small-image stem, named in the file's metadata


def test_the_label_budget_reaches_the_loop_class_balanced(tmp_path):
    run = tmp_path / "ft"
    assert main([*CNN, "--labels-per-class", "5", "--label-seed", "3", "--epochs", "1", "--output-dir", str(run)]) == 0
    from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform
    from maelab.evaluate.config import EvalDataOptions
    from maelab.evaluate.data import dataset_labels, split_train

    data = DataConfig(dataset="synthetic", synthetic_size=256)
    images = build_dataset(data, "train", eval_transform(dataset_info(data)))
    train, _ = split_train(images, images, EvalDataOptions(labels_per_class=5, label_seed=3))
    assert class_counts(dataset_labels(images)[train.indices], 4) == [5] * 4
    assert json.loads((run / "config.json").read_text())["data"]["label_seed"] == 3


@pytest.mark.parametrize(("train", "val", "expected"), [(54000, 6000, 1), (1000, 6000, 8), (1000, 1000, 2),
                                                        (100, 100, 2), (100, None, 1)])
def test_the_evaluation_cadence_keeps_evaluation_a_quarter_of_training(train, val, expected):
    sized = lambda n: None if n is None else list(range(n))  # noqa: E731
    assert eval_every(FinetuneConfig(), sized(train), sized(val)) == expected
    assert eval_every(FinetuneConfig(eval_every=3), sized(train), sized(val)) == 3


def test_arch_options_are_checked():
    with pytest.raises(ValueError, match="pass --init none"):
        FinetuneConfig(arch="resnet18")
    with pytest.raises(ValueError, match="does not apply to --arch"):
        FinetuneConfig(arch="resnet18", init="none", tune_blocks=1)
    assert FinetuneConfig().resolved_layer_decay == 0.75
    assert FinetuneConfig(arch="resnet18", init="none").resolved_layer_decay == 1.0
