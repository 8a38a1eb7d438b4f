"""``maelab export --to timm`` of fine-tuned and probed classifiers: timm's logits equal maelab's."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.evaluate.classifier import load_classifier
from maelab.interop.export import fold_bn_linear

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]

DATA = ["--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16", "--log-every", "2", "--epochs", "1"]


@pytest.mark.parametrize("command", ["finetune", "linprobe"])
def test_classifier_exports_with_its_trained_head(maelab_checkpoint, tmp_path, command):
    run = tmp_path / command
    extra = ["--warmup-epochs", "0"] if command == "finetune" else CLS
    assert main([command, "--checkpoint", str(maelab_checkpoint), *DATA, *extra, "--output-dir", str(run)]) == 0
    out = tmp_path / "clf-timm.safetensors"
    assert main(["export", str(run), "--to", "timm", "-o", str(out)]) == 0
    with safe_open(str(out), "pt") as handle:
        meta = handle.metadata()
    overlay = {**json.loads(meta["pretrained_cfg_overlay"]), "file": str(out)}
    vit = timm.create_model(meta["timm_architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                            **json.loads(meta["timm_kwargs"])).eval()
    model, _ = load_classifier(run / "checkpoint-last.safetensors")
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), vit(x)
    assert expected.abs().max() > 1e-3  # a trained head, not zeros
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert len(json.loads(meta["class_names"])) == expected.shape[1]


def test_bn_fold_equals_batchnorm_then_linear():
    g = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm1d(6, affine=False, eps=1e-6).eval()
    bn.running_mean.copy_(torch.randn(6, generator=g))
    bn.running_var.copy_(torch.rand(6, generator=g) + 0.1)
    fc = torch.nn.Linear(6, 4)
    head = torch.nn.Sequential(bn, fc)
    folded = fold_bn_linear({f"head.{k}": v for k, v in head.state_dict().items()}, eps=1e-6)
    x = torch.randn(8, 6, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(x @ folded["head.weight"].T + folded["head.bias"], head(x), atol=1e-6, rtol=1e-6)


def test_classifier_export_refuses_other_formats(maelab_checkpoint, tmp_path, capsys):
    run = tmp_path / "lp"
    assert main(["linprobe", *CLS, "--checkpoint", str(maelab_checkpoint), *DATA, "--output-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--to", "onnx", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "exports --to timm" in capsys.readouterr().err
    weights, _ = load_checkpoint(run)
    assert "head.1.weight" in weights and not (tmp_path / "x.onnx").exists()
