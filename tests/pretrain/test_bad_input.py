"""Bad input end to end: invalid options, corrupt image folders, malicious pickles."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.cli import main

SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16", "--epochs", "1"]


def run_cli(argv: list[str]) -> int:
    """Exit status of ``maelab argv``, whether main returns it or tyro exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--mask-ratio", "1.5"], ["--mask-ratio", "(0, 1)"]),
        (["--mask-ratio", "0"], ["--mask-ratio", "(0, 1)"]),
        (["--img-size", "30"], ["--img-size 30", "patch size 8", "multiples of 8"]),
        (["--decoder-num-heads", "3"], ["--decoder-num-heads 3", "--decoder-embed-dim 16", "[1, 2, 4, 8, 16]"]),
        (["--decoder-embed-dim", "18", "--decoder-num-heads", "1"], ["--decoder-embed-dim 18", "multiple of 4"]),
        (["--num-heads", "3"], ["--num-heads 3", "--embed-dim 32", "[1, 2, 4, 8, 16, 32]"]),
        (["--patch-size", "5"], ["--img-size 32", "patch size 5", "multiples of 5"]),
        (["--depth", "0"], ["--depth", "positive integer"]),
        (["--model", "no_such_model"], ["unknown model 'no_such_model'", "mae_vit_base_patch16"]),
        (["--dataset", "folder"], ["--data DIR"]),
        (["--dataset", "folder", "--data", "MISSING"], ["--data", "MISSING", "does not exist"]),
        (["--dataset", "fashion_mnist", "--data", "MISSING"], ["--data", "MISSING", "does not exist"]),
        (["--max-bad-fraction", "2"], ["--max-bad-fraction", "[0, 1]"]),
        (["--keep-last", "0"], ["--keep-last", "at least 1"]),
        (["--save-every-steps", "0"], ["--save-every-steps", "at least 1"]),
        (["--on-nonfinite", "maybe"], ["--on-nonfinite", "stop", "skip"]),
        (["--max-nonfinite", "-1"], ["--max-nonfinite", ">= 0"]),
    ],
)
def test_invalid_option_exits_2_before_writing(tmp_path, monkeypatch, capsys, options, expected):
    """One clear message naming the option and the allowed values; nothing written anywhere."""
    monkeypatch.chdir(tmp_path)  # the default run directory would land here
    options = [str(tmp_path / "missing") if o == "MISSING" else o for o in options]
    assert run_cli(["pretrain", *SMALL, *options]) == 2
    err = " ".join(capsys.readouterr().err.split())  # tyro wraps long lines in a box
    err = err.replace("│ ", "").replace(" │", "")
    for text in expected:
        assert text.replace("MISSING", str(tmp_path / "missing")) in err, (text, err)
    assert list(tmp_path.iterdir()) == []


def _corrupt_files(root: Path, n: int) -> list[Path]:
    """``n`` broken files of several kinds: zero bytes, text, truncated PNG/JPEG, random bytes, bad header."""
    rng = np.random.default_rng(0)
    good = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    png, jpeg = io.BytesIO(), io.BytesIO()
    good.save(png, format="PNG")
    good.save(jpeg, format="JPEG")
    kinds = [
        (".png", b""), (".png", b"this is a text file\n"), (".png", png.getvalue()[: len(png.getvalue()) // 2]),
        (".jpg", jpeg.getvalue()[:200]), (".webp", rng.bytes(300)), (".png", b"\x89PNG\r\n\x1a\n" + rng.bytes(64)),
    ]
    paths = []
    for i in range(n):
        suffix, data = kinds[i % len(kinds)]
        path = root / f"broken_{i:02d}{suffix}"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture
def dirty_folder(tmp_path) -> tuple[Path, list[Path]]:
    """train/: 380 good 12x12 images + 20 corrupt ones (exactly 5%); test/: 8 good ones."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for split, n in (("train", 380), ("test", 8)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / split / f"{i:03d}.png")
    return root, _corrupt_files(root / "train", 20)


FOLDER = ["--model", "debug", "--dataset", "folder", "--img-size", "16", "--batch-size", "50", "--epochs", "1",
          "--vis-every", "100"]


def test_folder_with_20_corrupt_files_trains_and_reports_them(dirty_folder, tmp_path, caplog):
    root, broken = dirty_folder
    run = tmp_path / "run"
    assert main(["pretrain", *FOLDER, "--data", str(root), "--num-workers", "2", "--output-dir", str(run)]) == 0
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    assert epochs[0]["skipped_files"] == 20
    report = [r.message for r in caplog.records if "unreadable image files skipped" in r.message]
    assert report and report[-1].startswith("20 unreadable image files skipped")
    named = report[-1].split("first: ")[1].rstrip(")").split(", ")
    assert len(named) == 5 and set(named) <= {str(p) for p in broken}


def test_too_many_corrupt_files_stop_with_a_clear_error(dirty_folder, tmp_path, capsys):
    root, _ = dirty_folder
    argv = ["pretrain", *FOLDER, "--data", str(root), "--max-bad-fraction", "0.01",
            "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not be decoded, more than --max-bad-fraction 0.01" in err and "broken_" in err
    # It stopped before its first checkpoint: nothing is left in the way of the same command.
    assert not (tmp_path / "run").exists()
    assert main([*argv[:-4], "--max-bad-fraction", "0.06", "--output-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "checkpoint-last.safetensors").exists()


class _Evil:
    """Unpickling this creates ``marker``: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_pickle(path: Path, marker: Path) -> Path:
    torch.save({"model": {"weight": torch.zeros(2)}, "payload": _Evil(marker)}, path)
    return path


def test_malicious_pickles_are_never_executed(pretrained_run, tmp_path, capsys):
    """Every command that loads a file refuses a malicious pickle with a clear error, without running it."""
    marker = tmp_path / "pwned"
    pth = _evil_pickle(tmp_path / "mae_pretrain_vit_base.pth", marker)
    disguised = _evil_pickle(tmp_path / "evil.safetensors", marker)
    run = tmp_path / "run"
    shutil.copytree(pretrained_run, run)
    for state in run.glob("*.state.pt"):
        state.unlink()
        _evil_pickle(state, marker)

    commands = [["pretrain", "--resume", str(run)]]
    for bad in (pth, disguised):
        commands += [
            ["reconstruct", str(bad), "-o", str(tmp_path / "r.png")],
            ["finetune", "--checkpoint", str(bad), "--output-dir", str(tmp_path / "ft")],
            ["linprobe", "--checkpoint", str(bad), "--output-dir", str(tmp_path / "lp")],
            ["knn", "--checkpoint", str(bad), "--output-dir", str(tmp_path / "knn")],
        ]
    for argv in commands:
        capsys.readouterr()
        assert run_cli(argv) == 2, argv
        err = capsys.readouterr().err
        if argv[0] == "pretrain":
            assert "can load safely" in err and "nothing in it was executed" in err, err
        elif str(pth) in argv:
            # Every command imports official .pth releases, through torch.load(weights_only=True) only.
            assert "weights_only=True" in err and "never runs pickled code" in err, (argv, err)
        else:
            assert "safetensors" in err, (argv, err)
        assert not marker.exists(), argv
    assert not any((tmp_path / d).exists() for d in ("ft", "lp", "knn", "r.png"))
    # The payload is live: a full unpickle does run it (this is what maelab never does).
    torch.load(pth, weights_only=False)
    assert marker.exists()
