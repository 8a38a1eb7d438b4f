"""`maelab pretrain` with the ablation variants (targets, augmentation, SimMIM), end to end on synthetic data."""

import torch

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.train.rundir import read_json
from maelab.visualize.reconstruct import load_mae

SMALL = ["--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "32",
         "--epochs", "1", "--log-every", "1"]


def test_pca_target_is_fitted_before_training_and_saved(tmp_path):
    run = tmp_path / "pca"
    assert main(["pretrain", "--model", "debug", *SMALL, "--target", "pca", "--pca-components", "12",
                 "--output-dir", str(run)]) == 0
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


def test_hog_target_and_augment_runs_and_reconstruct_does_not_crash(tmp_path):
    run = tmp_path / "hog"
    assert main(["pretrain", "--model", "debug", *SMALL, "--target", "hog", "--augment", "crop_jitter",
                 "--output-dir", str(run)]) == 0
    assert read_json(run / "config.json")["data"]["augment"] == "crop_jitter"
    assert (run / "recon.png").is_file()
    out = tmp_path / "rec.png"
    assert main(["reconstruct", str(run), "-o", str(out), "--num-images", "2"]) == 0
    assert out.stat().st_size > 1000


def test_simmim_pretrains_reconstructs_and_evaluates(tmp_path):
    run = tmp_path / "simmim"
    args = ["pretrain", *SMALL, "--model", "simmim_debug", "--knn-every", "1", "--output-dir", str(run)]
    assert main(args) == 0
    weights, meta = load_checkpoint(run)
    assert meta.kind == "mae" and meta.model_config["arch"] == "simmim"
    assert "mask_token" in weights and "decoder_pred.weight" in weights
    model, _, _ = load_mae(run)
    assert type(model).__name__ == "SimMIM"
    assert main(["reconstruct", str(run), "-o", str(tmp_path / "rec.png"), "--num-images", "2",
                 "--mask-ratio", "0.6"]) == 0
    assert main(["knn", "--checkpoint", str(run), "--k", "5", "--output-dir", str(tmp_path / "knn")]) == 0
    assert main(["linprobe", "--checkpoint", str(run), "--epochs", "1", "--batch-size", "32",
                 "--output-dir", str(tmp_path / "lin")]) == 0
    assert (tmp_path / "knn" / "knn.json").is_file() and (tmp_path / "lin" / "metrics.json").is_file()
    # A mask strategy SimMIM does not have is a usage error (exit 2), not a crash.
    assert main(["reconstruct", str(run), "--mask-strategy", "block", "-o", str(tmp_path / "b.png")]) == 2


def test_encoder_options_change_the_preset_and_travel_with_the_checkpoint(tmp_path):
    """--patch-size/--embed-dim/--depth/--num-heads reshape the encoder; evaluation rebuilds it from the checkpoint."""
    run = tmp_path / "encoder"
    assert main(["pretrain", "--model", "debug", *SMALL, "--patch-size", "4", "--embed-dim", "24", "--depth", "3",
                 "--num-heads", "3", "--output-dir", str(run)]) == 0
    weights, meta = load_checkpoint(run)
    cfg = meta.model_config
    assert (cfg["patch_size"], cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (4, 24, 3, 3)
    assert weights["patch_embed.proj.weight"].shape == (24, 1, 4, 4)
    assert "blocks.2.norm1.weight" in weights and "blocks.3.norm1.weight" not in weights
    model, _, _ = load_mae(run)
    assert model.pos_embed.shape == (1, 1 + 64, 24)  # 32x32 image, 4x4 patches
