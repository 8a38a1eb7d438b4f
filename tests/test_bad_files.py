"""Issue #20: a folder that pre-training accepts works in every command.

Every command that reads images takes ``--max-bad-fraction`` from one definition (``BadFileOptions``),
with the same help, default and check; the bad-file error names only flags the running command
accepts; and a new user's whole path on one folder with ~10% broken files (pretrain -> linprobe ->
knn -> finetune -> export -> timm) runs, each step reporting what it skipped.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from maelab.cli import COMMANDS, main
from maelab.data.config import MAX_BAD_FRACTION_HELP
from maelab.demo import app as demo_app
from maelab.evaluate.classifier import load_classifier

# Commands that read images, and those that do not (a new command must be put in one of the two). embed and
# anomaly were filed beside this issue: they are checked once they exist.
IMAGE_COMMANDS = tuple(c for c in ("pretrain", "finetune", "linprobe", "knn", "reconstruct", "demo", "bench", "embed",
                                   "anomaly") if c in COMMANDS)
NO_IMAGES = ("models", "shard", "export", "ablate")
POSITIONAL = ("reconstruct", "embed", "anomaly")  # a checkpoint or run first
TIFF_READABLE = importlib.util.find_spec("tifffile") is not None
SMALL = ["--img-size", "16", "--no-tensorboard"]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # tyro's own exits (help, a refused value)
        return int(exc.code or 0)


def unboxed(text: str) -> str:
    """tyro's output without its box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def help_text(command: str, capsys) -> str:
    capsys.readouterr()
    assert run_cli([command, "--help"]) == 0
    return unboxed(capsys.readouterr().out)


def _png(seed: int, brightness: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 64, (16, 16, 3)) + brightness, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dirty_folder(tmp_path_factory) -> tuple[Path, int]:
    """train/ and test/ with classes a and b: 26 good 16x16 PNGs, an unusual TIFF and 3 broken files
    (~10%): an empty PNG and a truncated PNG in train, a text file named .jpg in test. Returns the
    root and how many files the commands skip (the TIFF too when tifffile is not installed)."""
    root = tmp_path_factory.mktemp("photos")
    for split, per_class in (("train", 9), ("test", 4)):
        for c, (name, brightness) in enumerate((("a", 190), ("b", 10))):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                (root / split / name / f"{i:02d}.png").write_bytes(_png(100 * c + i + (50 if split == "test" else 0),
                                                                        brightness))
    (root / "train" / "a" / "empty.png").write_bytes(b"")
    (root / "train" / "b" / "truncated.png").write_bytes(_png(7, 10)[:60])
    (root / "test" / "a" / "notes.jpg").write_text("not a photo\n")
    # A float64, planar, two-page TIFF (scikit-image's test file): Pillow cannot identify it; maelab reads its
    # first page through tifffile when that is installed, else it is skipped like the broken files.
    pixels = np.random.default_rng(3).random((2, 3, 16, 16))
    tiff = root / "train" / "a" / "scan.tif"
    if TIFF_READABLE:
        import tifffile

        tifffile.imwrite(tiff, pixels, photometric="rgb", planarconfig="separate")
    else:
        tiff.write_bytes(b"II*\0" + bytes(64))
    return root, 3 if TIFF_READABLE else 4


@pytest.fixture(scope="module")
def dirty_run(dirty_folder, tmp_path_factory) -> Path:
    """The user's first step: a 1-epoch debug MAE pre-trained on the dirty folder with --max-bad-fraction 0.2."""
    root, _ = dirty_folder
    run = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["pretrain", "--model", "debug", "--dataset", "folder", "--data", str(root), *SMALL,
                 "--batch-size", "7", "--epochs", "1", "--vis-every", "100", "--max-bad-fraction", "0.2",
                 "--output-dir", str(run)]) == 0
    return run


def test_every_command_is_classified():
    """A new command (embed, anomaly...) must say whether it reads images; if it does, the tests below
    require it to take --max-bad-fraction."""
    assert set(COMMANDS) == set(IMAGE_COMMANDS) | set(NO_IMAGES)


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_every_image_command_takes_the_same_option(command, capsys, tmp_path):
    text = help_text(command, capsys)
    entry = re.search(r"--max-bad-fraction FLOAT (.*?) \(default: ([^)]*)\)", text)
    assert entry, text
    assert entry.group(1) == " ".join(MAX_BAD_FRACTION_HELP.split()) and entry.group(2) == "0.05"
    # The same check: an out-of-range value is refused with the same message, before anything runs.
    positional = [str(tmp_path / "missing")] if command in POSITIONAL else []
    assert run_cli([command, *positional, "--max-bad-fraction", "1.5"]) == 2
    captured = capsys.readouterr()
    assert "--max-bad-fraction must be in [0, 1]" in unboxed(captured.out + captured.err)


def _provoke(command: str, root: Path, run: Path, tmp_path: Path, monkeypatch) -> list[str]:
    """argv that reads the dirty folder with --max-bad-fraction 0 (any bad file is one too many)."""
    strict = ["--max-bad-fraction", "0"]
    out = ["--output-dir", str(tmp_path / command)]
    if command == "pretrain":
        return ["pretrain", "--model", "debug", "--dataset", "folder", "--data", str(root), *SMALL,
                "--batch-size", "7", "--epochs", "1", *strict, *out]
    if command in ("finetune", "linprobe", "knn"):
        return [command, "--checkpoint", str(run), "--val-size", "3", "--batch-size", "6", *strict, *out]
    if command == "reconstruct":
        return ["reconstruct", str(run), "--num-images", "9", *strict, "-o", str(tmp_path / "r.png")]
    if command == "demo":
        # The page itself is not started: its picker reads every test image, as a user clicking through would.
        def read_all(served):
            for i in range(len(served.test_set)):
                served.test_set[i]
            raise AssertionError("the test split's broken file went unnoticed")

        monkeypatch.setattr(demo_app, "build_app", read_all)
        return ["demo", str(run), *strict]
    if command == "embed":
        return ["embed", str(run), *strict, "-o", str(tmp_path / "embeddings.safetensors")]
    if command == "anomaly":
        return ["anomaly", str(run), *strict, *out]
    assert command == "bench"
    return ["bench", "--models", "debug", "--batch-sizes", "2", "--variants", "mae", "--steps", "1", "--warmup", "0",
            "--matmul-size", "64", "--loader", "--dataset", "folder", "--data", str(root), *strict,
            "--output", str(tmp_path / "bench")]


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_bad_file_error_names_only_flags_the_command_accepts(command, dirty_folder, dirty_run, tmp_path, capsys,
                                                             monkeypatch):
    accepted = flags(help_text(command, capsys))
    assert run_cli(_provoke(command, dirty_folder[0], dirty_run, tmp_path, monkeypatch)) == 2
    err = unboxed(capsys.readouterr().err)
    assert "could not be decoded, more than --max-bad-fraction 0" in err, err
    named = flags(err[err.index("maelab: error"):])
    assert "--max-bad-fraction" in named and named <= accepted, (named - accepted, err)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_new_users_path_on_a_folder_with_broken_files(dirty_folder, dirty_run, tmp_path, caplog, capsys):
    """pretrain (the fixture) -> linprobe -> knn -> finetune -> export -> timm on one folder, each with
    --max-bad-fraction 0.2."""
    _, skipped = dirty_folder
    tolerant = ["--max-bad-fraction", "0.2"]
    pre = dirty_run
    lp, knn, ft = (tmp_path / name for name in ("linprobe", "knn", "finetune"))

    epoch = [r for r in _records(pre) if r["event"] == "epoch"][-1]
    assert epoch["skipped_files"] == skipped - 1  # the training split's; the test split's file is never trained on

    # The default tolerance refuses this folder, naming the flag that this command accepts.
    capsys.readouterr()
    assert main(["linprobe", "--checkpoint", str(pre), "--val-size", "2", "--output-dir", str(lp)]) == 2
    assert "or raise --max-bad-fraction" in capsys.readouterr().err and not lp.exists()

    caplog.clear()
    assert main(["linprobe", "--checkpoint", str(pre), "--val-size", "2", "--c", "1", *tolerant,
                 "--output-dir", str(lp)]) == 0
    metrics = json.loads((lp / "metrics.json").read_text())
    assert metrics["skipped_files"] == skipped and [r["skipped_files"] for r in _records(lp) if r["event"] == "epoch"]
    assert {Path(name).name for name in metrics["skipped_file_names"]} >= {"empty.png", "truncated.png", "notes.jpg"}
    assert any(f"{skipped} unreadable image files skipped" in r.message for r in caplog.records)

    assert main(["knn", "--checkpoint", str(pre), "--val-size", "2", *tolerant, "--output-dir", str(knn)]) == 0
    result = json.loads((knn / "knn.json").read_text())
    assert result["skipped_files"] == skipped and len(result["skipped_file_names"]) == skipped

    assert main(["finetune", "--checkpoint", str(pre), "--val-size", "3", "--batch-size", "6", "--epochs", "1",
                 "--warmup-epochs", "0", *tolerant, "--output-dir", str(ft)]) == 0
    assert json.loads((ft / "metrics.json").read_text())["skipped_files"] == skipped
    # An epoch's record counts what training and validation have read; the test split is read once, at the end.
    assert [r for r in _records(ft) if r["event"] == "epoch"][-1]["skipped_files"] == skipped - 1

    exported = tmp_path / "classifier-timm.safetensors"
    assert main(["export", str(ft), "--to", "timm", "-o", str(exported)]) == 0
    from safetensors import safe_open

    with safe_open(str(exported), "pt") as handle:
        meta = handle.metadata()
    vit = timm.create_model(meta["timm_architecture"], pretrained=False, **json.loads(meta["timm_kwargs"])).eval()
    vit.load_state_dict(load_file(exported))  # strict: every key of timm's model, nothing else
    assert vit.num_classes == 2 and vit.patch_embed.img_size == (16, 16)
    model, _ = load_classifier(ft / "checkpoint-last.safetensors")
    x = torch.randn(3, vit.patch_embed.proj.in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(vit(x), model(x), atol=1e-5, rtol=1e-5)


def test_tolerance_may_change_on_resume(dirty_run, tmp_path):
    """--max-bad-fraction belongs to the invocation: a resumed fine-tuning run may raise it."""
    ft = tmp_path / "ft"
    args = ["--checkpoint", str(dirty_run), "--val-size", "3", "--batch-size", "6", "--epochs", "2",
            "--warmup-epochs", "0"]
    assert main(["finetune", *args, "--max-bad-fraction", "0.2", "--stop-after", "1", "--output-dir", str(ft)]) == 0
    assert main(["finetune", "--resume", str(ft), "--max-bad-fraction", "0.3"]) == 0
    assert json.loads((ft / "config.json").read_text())["data"]["max_bad_fraction"] == 0.3
