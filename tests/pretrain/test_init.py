"""`maelab pretrain --init SOURCE`: pre-training from a maelab run or an official-format file (built in memory),
end to end on synthetic data with debug-size models."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import pytest
import torch

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.data import DataConfig, build_dataset, dataset_info, pretrain_transform
from maelab.interop import load_source
from maelab.models import build_model
from maelab.pretrain.init import init_architecture, load_init
from maelab.train.config import from_jsonable
from maelab.train.environment import Environment
from maelab.train.loader import epoch_seed, train_loader
from maelab.train.rundir import read_json

sys.path.insert(0, str(Path(__file__).parents[1] / "interop"))
from official_format import official_state_dict, save_official  # noqa: E402

SMALL = ["--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "32", "--log-every", "1"]


def source_loss_on_first_batch(run: Path, source: torch.nn.Module) -> float:
    """``source``'s loss on the batch and mask of ``run``'s first optimizer step, drawn the way the loop draws
    them: the run's augmented training set in its epoch-0 order, the mask from the epoch-0 mask seed."""
    config = read_json(run / "config.json")
    data = from_jsonable(DataConfig, load_checkpoint(run)[1].extra["data"])
    seed = config["loop"]["seed"]
    train_set = build_dataset(data, "train", pretrain_transform(dataset_info(data), data.augment))
    loader = train_loader(train_set, config["loop"]["batch_size"], seed, Environment(torch.device("cpu")), 0)
    imgs = next(iter(loader.make(0, 0)))[0]  # (B, C, H, W)
    generator = torch.Generator("cpu").manual_seed(epoch_seed(seed, 0, "mask"))
    with torch.no_grad():
        return float(source.train()(imgs, generator=generator).loss)


def first_logged_loss(run: Path) -> float:
    first = next(r for r in map(eval_json, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "step")
    assert first["step"] == 1
    return first["loss"]


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_from_a_maelab_run_starts_at_the_source_loss_and_records_the_source(pretrained_run, tmp_path):
    run = tmp_path / "adapted"
    assert main(["pretrain", "--init", str(pretrained_run), *SMALL, "--steps", "2", "--output-dir", str(run)]) == 0
    source = load_source(pretrained_run).build()
    assert first_logged_loss(run) == pytest.approx(source_loss_on_first_batch(run, source), rel=1e-5, abs=1e-6)
    config = read_json(run / "config.json")
    assert config["init"] == str(pretrained_run) and config["model"] is None
    assert config["init_sha256"] == sha256(pretrained_run / "checkpoint-last.safetensors")
    _, meta = load_checkpoint(run)
    assert meta.model_config == source.config.to_dict() and meta.extra["model_name"] == "debug"


def test_init_from_an_official_file_starts_at_its_loss(tmp_path):
    path = save_official(tmp_path / "mae_pretrain_vit_tiny_full.pth", official_state_dict(seed=1))  # 16x16 RGB
    run = tmp_path / "adapted"
    assert main(["pretrain", "--init", str(path), *SMALL, "--steps", "1", "--output-dir", str(run)]) == 0
    source = load_source(path).build()
    assert first_logged_loss(run) == pytest.approx(source_loss_on_first_batch(run, source), rel=1e-5, abs=1e-6)
    config = read_json(run / "config.json")
    assert config["init"] == str(path) and config["init_sha256"] == sha256(path)
    assert run.name == "adapted" and load_checkpoint(run)[1].model_config["img_size"] == [16, 16]


def test_grayscale_larger_run_from_an_rgb_encoder_only_release_trains_and_logs_the_fresh_decoder(tmp_path, caplog):
    path = save_official(tmp_path / "mae_pretrain_vit_tiny.pth", official_state_dict(decoder=False, seed=2))
    run = tmp_path / "gray"
    with caplog.at_level(logging.INFO):
        # The decoder options shape the fresh decoder (the default would be the paper's 512-wide, 8 blocks).
        assert main(["pretrain", "--init", str(path), *SMALL, "--channels", "1", "--img-size", "32",
                     "--decoder-embed-dim", "32", "--decoder-depth", "1", "--decoder-num-heads", "2",
                     "--steps", "2", "--output-dir", str(run)]) == 0
    assert ("--init: initialized fresh: mask_token, decoder_pos_embed, decoder_embed, decoder_blocks.0, "
            "decoder_norm, decoder_pred (the source holds the encoder only)") in caplog.text
    assert "position embeddings resampled from the 2x2 to the 4x4 patch grid" in caplog.text
    assert "patch projection adapted from 3 to 1 input channels" in caplog.text
    losses = [r["loss"] for r in map(eval_json, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "step"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    weights, meta = load_checkpoint(run)
    assert weights["patch_embed.proj.weight"].shape == (128, 1, 8, 8) and weights["pos_embed"].shape == (1, 17, 128)
    assert meta.model_config["in_chans"] == 1 and meta.model_config["img_size"] == [32, 32]
    assert weights["decoder_embed.weight"].shape == (32, 128)


def test_adapted_weights_are_the_rgb_ones_summed_and_the_pixel_decoder_averaged():
    """The gray patch projection sums the RGB filters (timm); a raw-pixel decoder predicts the mean of R, G, B."""
    sd = official_state_dict(seed=3)
    imported = load_source_from(sd, "mae_visualize_vit_tiny.pth")
    want = init_architecture(imported.config, None, {"in_chans": 1}, Path("src"))
    model = build_model(want)
    assert load_init(model, imported) == []
    torch.testing.assert_close(model.patch_embed.proj.weight, sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    rgb_rows = sd["decoder_pred.weight"].reshape(64, 3, -1)  # (p*p, 3, Dd)
    torch.testing.assert_close(model.decoder_pred.weight, rgb_rows.mean(1))
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    # Another decoder shape: the encoder still loads, the whole decoder starts fresh.
    other = build_model(init_architecture(imported.config, None, {"decoder_depth": 2}, Path("src")))
    fresh = load_init(other, imported)
    assert "decoder_blocks.1.norm1.weight" in fresh and "decoder_embed.weight" in fresh
    assert not any(k.startswith(("blocks.", "patch_embed")) for k in fresh)


def load_source_from(sd: dict, name: str):
    import tempfile

    return load_source(save_official(Path(tempfile.mkdtemp()) / name, sd))


@pytest.mark.parametrize(("extra", "message"), [
    (["--patch-size", "4"], "--patch-size 4: --init {path} has patch size 8"),
    (["--model", "debug"], "--model debug is another architecture than --init {path}"),
    (["--embed-dim", "64"], "--embed-dim 64: --init {path} has embed dim 128"),
])
def test_a_source_of_another_architecture_is_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    path = save_official(tmp_path / "mae_pretrain_vit_tiny_full.pth", official_state_dict(seed=1))
    run = tmp_path / "never"
    assert main(["pretrain", "--init", str(path), *SMALL, "--steps", "1", *extra, "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "maelab: error:" in err
    assert not run.exists()


def test_a_gray_source_cannot_take_rgb_and_a_missing_source_is_an_error(pretrained_run, tmp_path, capsys):
    run = tmp_path / "never"
    assert main(["pretrain", "--init", str(pretrained_run), *SMALL, "--channels", "3", "--output-dir", str(run)]) == 2
    assert "only an RGB source's patch projection can be adapted" in capsys.readouterr().err
    assert main(["pretrain", "--init", str(tmp_path / "nothing.pth"), *SMALL, "--output-dir", str(run)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not run.exists()


def test_an_init_run_resumes_without_its_source(pretrained_run, tmp_path):
    source = tmp_path / "source.safetensors"
    source.write_bytes((pretrained_run / "checkpoint-last.safetensors").read_bytes())
    run = tmp_path / "adapted"
    assert main(["pretrain", "--init", str(source), *SMALL, "--epochs", "2", "--stop-after", "1",
                 "--output-dir", str(run)]) == 0
    source.unlink()  # the architecture comes from the run's own checkpoint now
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert load_checkpoint(run)[1].epoch == 2


def test_init_from_a_transformers_directory_starts_at_its_loss_and_hashes_every_file(pretrained_run, tmp_path):
    pytest.importorskip("transformers")
    from maelab.interop.hf import save_hf
    from maelab.pretrain.init import source_sha256

    hf_dir = save_hf(load_source(pretrained_run), tmp_path / "hf")
    digest = source_sha256(hf_dir)
    run = tmp_path / "adapted"
    assert main(["pretrain", "--init", str(hf_dir), *SMALL, "--steps", "1", "--output-dir", str(run)]) == 0
    source = load_source(hf_dir).build()
    assert first_logged_loss(run) == pytest.approx(source_loss_on_first_batch(run, source), rel=1e-5, abs=1e-6)
    assert read_json(run / "config.json")["init_sha256"] == digest
    (hf_dir / "config.json").write_text((hf_dir / "config.json").read_text() + "\n")
    assert source_sha256(hf_dir) != digest
