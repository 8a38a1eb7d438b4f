"""``maelab linprobe``: cached and augmented probes leave the encoder untouched; the optimizer recipe."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.checkpoint import load_checkpoint, read_meta
from maelab.cli import main
from maelab.evaluate.config import LARS_LR, LinprobeConfig, ProbeOptimConfig
from maelab.evaluate.linprobe import build_probe_optimizer
from maelab.evaluate.source import load_pretrained
from maelab.models import get_config
from maelab.train.config import OptimConfig

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]

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
    assert main(["linprobe", *CLS, "--checkpoint", str(pretrained_run), *FAST, "--epochs", "2", "--optimizer", "lars",
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
    assert main(["linprobe", *CLS, "--checkpoint", str(pretrained_run), *FAST, "--epochs", "15", "--optimizer", "sgd",
                 "--blr", "2", "--warmup-epochs", "0", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["top1"] > 50  # chance is 25%


def test_lars_adapts_weights_only():
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(8, affine=False), torch.nn.Linear(8, 3))
    optimizer = build_probe_optimizer(head, LinprobeConfig(checkpoint="unused", optimizer="lars"))
    weights, biases = optimizer.param_groups
    assert weights["params"] == [head[1].weight] and weights["always_adapt"] and weights["momentum"] == 0.9
    assert biases["params"] == [head[1].bias] and not biases["always_adapt"] and biases["weight_decay"] == 0


def test_lars_takes_an_absolute_lr_at_any_batch_size():
    lars = LinprobeConfig(checkpoint="unused", optimizer="lars")
    assert lars.with_lars_lr().optim.lr == LARS_LR == 3.2
    given = LinprobeConfig(checkpoint="unused", optimizer="lars", optim=OptimConfig(lr=6.4, weight_decay=0.0))
    assert given.with_lars_lr().optim.lr == 6.4
    sgd = LinprobeConfig(checkpoint="unused", optimizer="sgd")
    assert sgd.with_lars_lr() is sgd and sgd.optim.absolute_lr(64) == pytest.approx(0.025)  # SGD keeps blr x B / 256
    assert LinprobeConfig(checkpoint="unused", optimizer="sgd", optim=ProbeOptimConfig(blr=0.4)).optim.absolute_lr(
        64) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="absolute --lr"):
        LinprobeConfig(checkpoint="unused", optimizer="lars", optim=OptimConfig(blr=0.5, weight_decay=0.0))


@pytest.mark.parametrize("blr", ["0.1", "0.5"])
def test_lars_refuses_an_explicit_blr_even_the_sgd_default(tmp_path, capsys, blr):
    # --blr 0.1 is --optimizer sgd's default; given with lars it would be silently ignored, so it is refused too.
    assert main(["linprobe", "--init", "pixels", "--dataset", "digits", "--optimizer", "lars", "--blr", blr,
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert "absolute --lr" in capsys.readouterr().err and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="positive"):
        ProbeOptimConfig(blr=0.0)


def _probe_test_top1(tmp_path, name: str, *args: str) -> tuple[float, dict]:
    out = tmp_path / name
    assert main(["linprobe", "--init", "pixels", "--dataset", "digits", "--output-dir", str(out),
                 "--no-tensorboard", *args]) == 0
    return json.loads((out / "metrics.json").read_text())["last"]["top1"], json.loads(
        (out / "config.json").read_text())


def test_lars_probe_converges_at_small_batch_where_the_linear_scaling_rule_does_not(tmp_path):
    """Real images (scikit-learn's digits, raw pixels), batch 64, the default 90 epochs: LARS at its default lr
    ends within 1.5 points of the solved probe; at the paper's linear-scaling lr (blr 0.1 x 64 / 256) it barely
    moves."""
    solved, _ = _probe_test_top1(tmp_path, "solved")
    lars, config = _probe_test_top1(tmp_path, "lars", "--optimizer", "lars", "--batch-size", "64")
    paper, _ = _probe_test_top1(tmp_path, "paper", "--optimizer", "lars", "--batch-size", "64", "--lr", "0.025")
    assert config["optim"]["lr"] == LARS_LR  # written out, so a resume keeps it
    assert abs(lars - solved) <= 1.5, (lars, solved)
    assert paper < solved - 20, (paper, solved)


def test_linprobe_run_with_no_options_probes_the_validated_features(pretrained_run, tmp_path):
    """``maelab linprobe RUN``: the run directory as the positional argument, and by default the mean patch
    token of every block (results/probe_features chose it on validation), whatever the encoder's depth."""
    out = tmp_path / "lp"
    assert main(["linprobe", str(pretrained_run), "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    depth = get_config("debug").depth
    assert metrics["pool"] == "avg" and metrics["layers"] == depth
    assert metrics["feature_dim"] == depth * get_config("debug").embed_dim
    assert metrics["source_checkpoint"] == str(pretrained_run)
    assert json.loads((out / "config.json").read_text())["checkpoint"] == str(pretrained_run)


def test_linprobe_refuses_two_different_runs(pretrained_run, tmp_path):
    assert main(["linprobe", str(pretrained_run), "--checkpoint", str(tmp_path / "other"),
                 "--output-dir", str(tmp_path / "lp")]) == 2
