"""``maelab linprobe``: cached and augmented probes leave the encoder untouched; the optimizer recipe."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.checkpoint import load_checkpoint, read_meta
from maelab.cli import main
from maelab.evaluate.config import LinprobeConfig
from maelab.evaluate.linprobe import build_probe_optimizer
from maelab.evaluate.source import load_pretrained

FAST = ["--batch-size", "32", "--log-every", "2"]


def _assert_encoder_untouched(pretrained_run, run):
    before = load_pretrained(pretrained_run, "test").encoder
    after, _ = load_checkpoint(run / "checkpoint-last.safetensors")
    assert set(after) - set(before) == {"head.0.running_mean", "head.0.running_var", "head.0.num_batches_tracked",
                                        "head.1.weight", "head.1.bias"}
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("extra", [[], ["--augment", "--pool", "avg"]], ids=["cached", "augment-avg"])
def test_linprobe_end_to_end_leaves_encoder_bit_identical(pretrained_run, tmp_path, extra):
    out = tmp_path / "lp"
    assert main(["linprobe", "--checkpoint", str(pretrained_run), *FAST, "--epochs", "2", "--optimizer", "lars",
                 "--val-fraction", "0", "--output-dir", str(out),
                 *extra]) == 0
    for name in ("config.json", "log.jsonl", "metrics.json", "confusion.png",
                 "checkpoint-best.safetensors", "checkpoint-last.safetensors"):
        assert (out / name).is_file(), name
    _assert_encoder_untouched(pretrained_run, out)
    epochs = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all("train_top1" in r and "test_top1" in r for r in epochs)
    meta = read_meta(out / "checkpoint-last.safetensors")
    assert meta.kind == "classifier" and meta.model_config["head"] == "bn_linear"
    assert meta.extra["augment"] == bool(extra)
    head, _ = load_checkpoint(out / "checkpoint-last.safetensors")
    assert head["head.0.num_batches_tracked"] == 2 * 4  # the BatchNorm ran in train mode every step


def test_linprobe_learns_on_cached_features(pretrained_run, tmp_path):
    out = tmp_path / "lp-sgd"
    assert main(["linprobe", "--checkpoint", str(pretrained_run), *FAST, "--epochs", "15", "--optimizer", "sgd",
                 "--blr", "2", "--warmup-epochs", "0", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["top1"] > 50  # chance is 25%


def test_lars_adapts_weights_only():
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(8, affine=False), torch.nn.Linear(8, 3))
    optimizer = build_probe_optimizer(head, LinprobeConfig(checkpoint="unused", optimizer="lars"))
    weights, biases = optimizer.param_groups
    assert weights["params"] == [head[1].weight] and weights["always_adapt"] and weights["momentum"] == 0.9
    assert biases["params"] == [head[1].bias] and not biases["always_adapt"] and biases["weight_decay"] == 0
