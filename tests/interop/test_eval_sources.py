"""finetune / linprobe / knn read the encoder of an official MAE .pth or a Hugging Face directory."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.interop import load_source

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]

DATA = ["--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16", "--log-every", "2"]


def _encoder_in(run_dir):
    weights, _ = load_checkpoint(run_dir / "checkpoint-last.safetensors")
    return weights


@pytest.mark.parametrize("kind", ["encoder", "full"])
def test_linprobe_on_an_official_release_keeps_its_encoder(official_files, tmp_path, kind):
    out = tmp_path / "lp"
    assert main(["linprobe", *CLS, "--checkpoint", str(official_files[kind]), *DATA, "--epochs", "1",
                 "--output-dir", str(out)]) == 0
    expected = load_source(official_files[kind]).encoder_weights()
    got = _encoder_in(out)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    record = json.loads((out / "metrics.json").read_text())
    assert record["source_checkpoint"] == str(official_files[kind])


def test_finetune_starts_from_an_official_release(official_files, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(official_files["full"]), *DATA, "--epochs", "1",
                 "--warmup-epochs", "0", "--output-dir", str(out)]) == 0
    # The fine-tuned blocks moved away from the release's, starting from them (not from random init).
    start = load_source(official_files["full"]).encoder_weights()["blocks.0.attn.qkv.weight"]
    after = _encoder_in(out)["blocks.0.attn.qkv.weight"]
    assert not torch.equal(after, start)
    assert (after - start).abs().max() < 0.05 * start.abs().max()


def test_knn_on_a_hugging_face_directory(official_files, tmp_path):
    hf_dir = tmp_path / "hf"
    assert main(["export", str(official_files["full"]), "--to", "hf", "-o", str(hf_dir)]) == 0
    out = tmp_path / "knn"
    assert main(["knn", *CLS, "--checkpoint", str(hf_dir), *DATA[:4], "--output-dir", str(out)]) == 0
    assert 0 <= json.loads((out / "knn.json").read_text())["top1"] <= 100


def test_a_damaged_release_is_refused_before_training(official_files, tmp_path, capsys):
    bad = tmp_path / "mae_pretrain_vit_bad.pth"
    state = torch.load(official_files["encoder"], weights_only=True)
    state["model"]["blocks.0.attn.qkv.weight"] = state["model"]["blocks.0.attn.qkv.weight"][:5]
    torch.save(state, bad)
    out = tmp_path / "lp"
    assert main(["linprobe", "--checkpoint", str(bad), *DATA, "--output-dir", str(out)]) == 2
    assert "blocks.0.attn.qkv.weight" in capsys.readouterr().err
    assert not out.exists()


def test_init_none_takes_an_official_release_architecture_only(official_files, tmp_path):
    out = tmp_path / "lp"
    assert main(["linprobe", *CLS, "--init", "none", "--checkpoint", str(official_files["full"]), *DATA,
                 "--epochs", "1", "--output-dir", str(out)]) == 0
    release = load_source(official_files["full"]).encoder_weights()
    got = _encoder_in(out)
    assert got["blocks.0.attn.qkv.weight"].shape == release["blocks.0.attn.qkv.weight"].shape
    assert not torch.equal(got["blocks.0.attn.qkv.weight"], release["blocks.0.attn.qkv.weight"])


def test_pixels_with_a_missing_release_is_refused(tmp_path, capsys):
    out = tmp_path / "knn"
    missing = tmp_path / "nowhere.pth"
    assert main(["knn", "--init", "pixels", "--checkpoint", str(missing), *DATA[:4], "--output-dir", str(out)]) == 2
    assert "nowhere.pth does not exist" in capsys.readouterr().err
    assert not out.exists()
