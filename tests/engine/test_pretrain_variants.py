"""`maelab pretrain` with the ablation variants (targets, augmentation, SimMIM), end to end on synthetic data."""

import pytest
import torch

from maelab.cli import main
from maelab.engine.checkpoint import load_checkpoint
from maelab.engine.reconstruct import load_mae

SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "32",
         "--epochs", "1", "--log-every", "1"]


def test_pca_target_is_fitted_before_training_and_saved(tmp_path):
    run = tmp_path / "pca"
    assert main(["pretrain", *SMALL, "--target", "pca", "--pca-components", "12", "--output-dir", str(run)]) == 0
    weights, meta = load_checkpoint(run)
    assert meta.model_config["target"] == "pca" and meta.model_config["pca_components"] == 12
    components = weights["target_pca_components"]
    assert components.shape == (12, 64)
    assert torch.allclose(components @ components.T, torch.eye(12), atol=1e-4)
    assert torch.all(weights["target_pca_std"] > 0)
    model, _, _ = load_mae(run)
    assert torch.equal(model.pca_basis().mean, weights["target_pca_mean"])
    out = tmp_path / "rec.png"
    assert main(["reconstruct", str(run), "-o", str(out), "--num-images", "2"]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("augment", ["none", "crop_jitter"])
def test_hog_target_and_augment_runs_and_reconstruct_does_not_crash(tmp_path, augment):
    run = tmp_path / "hog"
    assert main(["pretrain", *SMALL, "--target", "hog", "--augment", augment, "--output-dir", str(run)]) == 0
    assert (run / "recon.png").is_file()
    out = tmp_path / "rec.png"
    assert main(["reconstruct", str(run), "-o", str(out), "--num-images", "2"]) == 0
    assert out.stat().st_size > 1000
