"""``--init none`` (random-init encoder) and ``--init pixels`` (raw pixels) for linprobe and knn."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.checkpoint import read_meta
from maelab.cli import main
from maelab.evaluate.classifier import load_classifier
from maelab.evaluate.config import EvalDataOptions
from maelab.evaluate.features import frozen_features
from maelab.models import create_model
from maelab.models.classifier import PixelProbe

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]

SYNTH = ["--dataset", "synthetic", "--synthetic-size", "128"]
FAST = ["--batch-size", "32", "--log-every", "2"]
DATA = EvalDataOptions(dataset="synthetic", synthetic_size=128)
CPU = torch.device("cpu")


def _features(init, checkpoint=None, model="debug", seed=0, data=DATA):
    return frozen_features(init, checkpoint, model, data, "token", "none", seed, CPU, "test")


def _encoder_state(frozen):
    return {k: v for k, v in frozen.model.state_dict().items() if not k.startswith("head")}


def test_random_encoder_is_create_model_after_seed_and_reproducible(pretrained_run):
    torch.manual_seed(3)
    expected = create_model("debug").encoder_state_dict()
    first, second = _features("none", seed=3), _features("none", seed=3)
    assert first.provenance == dict(init="none", source_checkpoint=None, model="debug", init_seed=3)
    assert first.dim == 32 and first.name == "debug-random"
    state = _encoder_state(first)
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    imgs = torch.randn(8, 1, 32, 32)
    torch.testing.assert_close(first.encode(imgs), second.encode(imgs), rtol=0, atol=0)
    assert not torch.allclose(first.encode(imgs), _features("none", seed=4).encode(imgs))
    trained = _features("pretrained", pretrained_run)
    assert not torch.allclose(first.encode(imgs), trained.encode(imgs))
    # A checkpoint gives the architecture and the data defaults (here the same debug ViT), never its weights.
    arch = _features("none", pretrained_run, model="mae_vit_fashion", seed=3, data=EvalDataOptions())
    assert arch.dim == 32 and arch.data.dataset == "synthetic" and arch.provenance["source_checkpoint"]
    torch.testing.assert_close(arch.encode(imgs), first.encode(imgs), rtol=0, atol=0)


def test_pixel_features_are_flattened_normalized_images():
    frozen = _features("pixels", data=EvalDataOptions(dataset="synthetic", synthetic_size=128, img_size=16))
    assert isinstance(frozen.model, PixelProbe) and frozen.dim == 1 * 16 * 16
    assert frozen.provenance == dict(init="pixels", source_checkpoint=None, model=None)
    imgs = torch.randn(5, 1, 16, 16)
    assert torch.equal(frozen.encode(imgs), imgs.reshape(5, 256))
    assert _features("pixels").dim == 1 * 32 * 32  # the native synthetic size


@pytest.mark.parametrize("init", ["none", "pixels"])
def test_linprobe_baselines_end_to_end(tmp_path, init):
    out = tmp_path / f"lp-{init}"
    assert main(["linprobe", *CLS, "--init", init, "--model", "debug", *SYNTH, *FAST, "--epochs", "2",
                 "--optimizer", "lars", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["init"] == init and metrics["source_checkpoint"] is None
    assert metrics["feature_dim"] == (32 if init == "none" else 1024) and len(metrics["epochs"]) == 2
    meta = read_meta(out / "checkpoint-last.safetensors")
    assert meta.kind == "classifier" and meta.extra["init"] == init
    model, _ = load_classifier(out / "checkpoint-best.safetensors")
    assert isinstance(model, PixelProbe) == (init == "pixels")
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 4)


def test_knn_on_pixels_beats_chance(tmp_path):
    out = tmp_path / "knn-pixels"
    assert main(["knn", "--init", "pixels", *SYNTH, "--k", "5", "--output-dir", str(out)]) == 0
    report = json.loads((out / "knn.json").read_text())
    assert report["init"] == "pixels" and report["feature_dim"] == 1024 and report["test_images"] == 32
    assert report["top1"] > 40  # 4 classes: chance is 25%


def test_knn_random_encoder(tmp_path):
    out = tmp_path / "knn-none"
    assert main(["knn", *CLS, "--init", "none", "--model", "debug", "--seed", "1", *SYNTH,
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "knn.json").read_text())
    assert report["init"] == "none" and report["model"] == "debug" and report["init_seed"] == 1
    assert 0 <= report["top1"] <= 100


def test_bad_baseline_options_exit_2(tmp_path, capsys):
    assert main(["linprobe", "--init", "pixels", "--augment", *SYNTH, "--output-dir", str(tmp_path / "a")]) == 2
    assert "--init pixels" in capsys.readouterr().err
    assert main(["knn", *SYNTH, "--output-dir", str(tmp_path / "b")]) == 2
    assert "--init none" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("init", ["none", "pixels"])
def test_baseline_probe_stopped_after_an_epoch_resumes_exactly(tmp_path, init):
    """The random-encoder and pixel probes (a PixelProbe holds only its head) resume like any other run."""
    argv = ["linprobe", *CLS, "--init", init, "--model", "debug", *SYNTH, *FAST, "--epochs", "2", "--optimizer", "lars"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main([*argv, "--output-dir", str(straight)]) == 0
    assert main([*argv, "--stop-after", "1", "--output-dir", str(stopped)]) == 0
    assert len(json.loads((stopped / "metrics.json").read_text())["epochs"]) == 1
    assert main(["linprobe", "--resume", str(stopped)]) == 0
    a, b = (load_classifier(run / "checkpoint-last.safetensors")[0].state_dict() for run in (straight, stopped))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((straight / "metrics.json").read_text()) == json.loads((stopped / "metrics.json").read_text())
