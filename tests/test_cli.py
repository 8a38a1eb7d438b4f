"""The command line end to end on the synthetic dataset, in a temporary directory."""

import json
import re
import subprocess
import sys

import torch

from maelab.checkpoint import load_checkpoint, read_meta
from maelab.cli import main

SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "128", "--batch-size", "32",
         "--log-every", "2", "--blr", "1e-3"]


def _epochs(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]


def test_pretrain_resume_reconstruct_and_refuse_overwrite(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", *SMALL, "--epochs", "2", "--output-dir", str(run)]) == 0
    for name in ("config.json", "log.jsonl", "checkpoint-last.safetensors", "checkpoint-last.state.pt",
                 "loss.png", "recon.png", "recon_epoch001.png", "recon_epoch002.png"):
        assert (run / name).is_file(), name
    first = _epochs(run)
    assert [r["epoch"] for r in first] == [0, 1]
    assert all(r["img_per_s"] > 0 and r["loss"] > 0 for r in first)
    assert read_meta(run).epoch == 2
    weights_before, _ = load_checkpoint(run)

    # Refuse to overwrite an existing run; nothing in it changes.
    stamp = (run / "log.jsonl").read_bytes()
    assert main(["pretrain", *SMALL, "--epochs", "2", "--output-dir", str(run)]) == 2
    assert (run / "log.jsonl").read_bytes() == stamp

    # Resume for a third epoch.
    assert main(["pretrain", "--resume", str(run), "--epochs", "3"]) == 0
    after = _epochs(run)
    assert [r["epoch"] for r in after] == [0, 1, 2]
    assert after[:2] == first
    weights_after, meta = load_checkpoint(run)
    assert meta.epoch == 3
    assert not torch.equal(weights_before["blocks.0.attn.qkv.weight"], weights_after["blocks.0.attn.qkv.weight"])
    assert json.loads((run / "config.json").read_text())["loop"]["epochs"] == 3

    # Finished runs and changed options are refused on resume.
    assert main(["pretrain", "--resume", str(run), "--epochs", "3"]) == 2
    assert main(["pretrain", "--resume", str(run), "--epochs", "4", "--blr", "0.5"]) == 2

    out = tmp_path / "rec.png"
    assert main(["reconstruct", str(run), "--mask-ratio", "0.5", "--seed", "3", "-o", str(out),
                 "--num-images", "4"]) == 0
    assert out.stat().st_size > 1000


def test_resume_equals_uninterrupted_run(tmp_path):
    """Stopping after epoch 1 of 3 and resuming gives the same weights and loss log as one run."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["pretrain", *SMALL, "--epochs", "3", "--output-dir", str(straight)]) == 0
    assert main(["pretrain", *SMALL, "--epochs", "3", "--stop-after", "1", "--output-dir", str(stopped)]) == 0
    assert [r["epoch"] for r in _epochs(stopped)] == [0]
    assert main(["pretrain", "--resume", str(stopped)]) == 0
    a, _ = load_checkpoint(straight)
    b, _ = load_checkpoint(stopped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop_time = lambda rs: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_time_s")} for r in rs]  # noqa: E731
    assert drop_time(_epochs(straight)) == drop_time(_epochs(stopped))


def test_bad_options_exit_2_before_writing(tmp_path):
    run = tmp_path / "bad"
    cases = [
        ["--mask-ratio", "1.5"],
        ["--model", "no_such_model"],
        ["--dataset", "folder", "--data", str(tmp_path / "missing")],
        ["--batch-size", "100000"],
    ]
    for extra in cases:
        argv = ["pretrain", *SMALL, *extra, "--epochs", "1", "--output-dir", str(run)]
        assert main(argv) == 2, extra
        assert not run.exists(), extra


def test_reconstruct_rejects_non_checkpoint(tmp_path):
    bogus = tmp_path / "weights.pth"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["reconstruct", str(bogus)]) == 2


def test_console_entry_point_lists_models():
    out = subprocess.run([sys.executable, "-m", "maelab", "models"], capture_output=True, text=True, check=True)
    assert "mae_vit_base_patch16" in out.stdout and "mae_vit_fashion" in out.stdout


def test_divergence_stops_with_clear_message(tmp_path, caplog):
    run = tmp_path / "nan"
    assert main(["pretrain", *SMALL, "--lr", "1e30", "--warmup-epochs", "0", "--epochs", "1",
                 "--output-dir", str(run)]) == 1
    assert any("loss is" in r.message and "--blr" in r.message for r in caplog.records)
    assert not (run / "checkpoint-last.safetensors").exists()


def test_reconstruct_image_files_and_bad_file(tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    assert main(["pretrain", *SMALL, "--epochs", "1", "--output-dir", str(run)]) == 0
    good = tmp_path / "photo.png"
    Image.new("RGB", (50, 37), (200, 30, 30)).save(good)
    out = tmp_path / "mine.png"
    assert main(["reconstruct", str(run), str(good), "-o", str(out)]) == 0
    assert out.stat().st_size > 1000
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["reconstruct", str(run), str(bad), "-o", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_help_lists_the_presets_and_explains_every_mask_and_decoder_option(capsys):
    """--model names its choices; each option of the mask/decoder group has a help line, not just a default."""
    import dataclasses

    from maelab.models import list_models
    from maelab.pretrain.config import ModelOptions

    for command in ("pretrain", "finetune", "linprobe", "knn"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.replace("│", " ").split())
        assert all(name in text for name in list_models()), command
    assert main(["pretrain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for f in dataclasses.fields(ModelOptions):
        flag = "--" + f.name.replace("_", "-")
        # The option's own entry: the flag, its metavar ({None}|INT, {None,random,...}), then its help.
        entry = re.search(re.escape(flag) + r" \{[^}]*\}(\|[A-Z]+)? (\S+)", text)
        assert entry is not None, flag
        assert entry.group(2) != "(default:", f"{flag} has no help line"
