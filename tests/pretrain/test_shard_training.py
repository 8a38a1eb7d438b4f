"""pretrain / finetune / linprobe / knn read WebDataset shards (--dataset shards --data DIR)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.data import DataConfig, build_dataset, dataset_info, pretrain_transform
from maelab.train.checkpoint_store import discard_after
from maelab.train.environment import Environment
from maelab.train.loader import train_loader

CLASSES = ("ant", "bee", "cow")
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """48 train / 12 test 16x16 RGB PNGs in 3 class folders, written as shards of 6 images."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for split, count in (("train", 48), ("test", 12)):
        for i in range(count):
            label = i % 3
            # Class-dependent brightness, so the classes are learnable.
            array = np.clip(rng.normal(60 + 70 * label, 20, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            path = root / "images" / split / CLASSES[label] / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    assert main(["shard", str(root / "images"), str(root / "out"), "--max-per-shard", "6"]) == 0
    return root / "out"


# Undecodable bytes of several kinds: empty, text, a truncated PNG, a PNG signature then garbage.
BROKEN = (lambda png: b"", lambda png: b"not an image\n", lambda png: png[: len(png) // 2],
          lambda png: png[:8] + bytes(64))


@pytest.fixture(scope="module")
def corrupt_shards(shard_dir, tmp_path_factory):
    """A copy of ``shard_dir`` whose train shards hold 4 undecodable images (the shards' last, first, ... sample:
    the last of a worker's stream needs the wrap-around); returns (dir, their keys)."""
    out = tmp_path_factory.mktemp("corrupt") / "shards"
    shutil.copytree(shard_dir, out)
    keys = []
    for n, (path, position) in enumerate(zip(sorted(out.glob("train-*.tar"))[::2], (5, 0, 2, 5))):
        with tarfile.open(path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        pngs = [i for i, (m, _) in enumerate(members) if m.name.endswith(".png")]
        victim = pngs[position]
        keys.append(members[victim][0].name.split(".")[0])
        member, data = members[victim]
        members[victim] = (member, BROKEN[n](data))
        with tarfile.open(path, "w") as tar:  # rewritten in the same member order
            for member, data in members:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return out, keys


def _keys_and_images(batches):
    return [(list(keys), imgs) for imgs, _, keys in batches]


def test_stream_epoch_is_fixed_distinct_per_rank_and_resumes_exactly(shard_dir):
    cfg = DataConfig(dataset="shards", data=shard_dir, img_size=16, channels=1)
    info = dataset_info(cfg)
    assert info.class_names == CLASSES and info.channels == 1
    assert info.mean == (0.5,) and info.std == (0.5,)  # stored in shards.json: the folder's gray defaults
    rgb = dataset_info(DataConfig(dataset="shards", data=shard_dir, img_size=16))
    assert rgb.channels == 3 and rgb.mean == (0.485, 0.456, 0.406) and rgb.img_size == (16, 16)
    data = build_dataset(cfg, "train", pretrain_transform(info)).configured(with_keys=True)
    batch, workers = 4, 2
    env = [Environment(torch.device("cpu"), rank=r, world_size=2) for r in range(2)]
    # 8 shards for 2 ranks x 2 workers: each consumer gets 2 shards (12 images) = 3 batches of 4.
    plans = [train_loader(data, batch, 7, e, workers) for e in env]
    assert [p.steps for p in plans] == [6, 6] and plans[0].stream_workers == workers
    makes = [p.make for p in plans]
    for epoch in range(2):
        full = [_keys_and_images(makes[r](epoch)) for r in range(2)]
        assert [len(f) for f in full] == [6, 6]
        keys = [k for f in full for ks, _ in f for k in ks]
        assert len(keys) == len(set(keys)) == 48  # every image exactly once, ranks disjoint
        for start in (1, 4):  # a mid-epoch resume: the same batches, augmentation included
            rest = _keys_and_images(makes[0](epoch, start))
            assert [k for k, _ in rest] == [k for k, _ in full[0][start:]]
            for (_, got), (_, want) in zip(rest, full[0][start:]):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="--max-per-shard"):
        train_loader(data, 16, 0, env[0], workers)  # 12 images per consumer cannot fill a batch of 16


def test_corrupt_images_in_shards_are_skipped_in_fixed_epochs_that_resume_exactly(corrupt_shards):
    shards, broken = corrupt_shards
    cfg = DataConfig(dataset="shards", data=shards, img_size=16, channels=1, max_bad_fraction=0.1)
    data = build_dataset(cfg, "train", pretrain_transform(dataset_info(cfg))).configured(with_keys=True)
    env = Environment(torch.device("cpu"))
    plan = train_loader(data, 4, 7, env, 2)  # 2 workers x 4 shards (24 images) = 12 batches, as with clean shards
    assert plan.steps == 12
    full = _keys_and_images(plan.make(0))
    assert len(full) == 12 and all(imgs.shape == (4, 1, 16, 16) for _, imgs in full)
    keys = [k for ks, _ in full for k in ks]
    # Every broken image's slot holds another (decodable) image: 44 distinct keys, 4 of them twice.
    assert not set(broken) & set(keys) and len(keys) == 48 and len(set(keys)) == 44
    # Counted in the main process although the workers found them, named SHARD/KEY: the shard that holds them.
    named = [name.split("/") for name in data.bad_files]
    assert len(named) == 4 and {key for _, key in named} == set(broken)
    for shard, key in named:
        with tarfile.open(shards / shard) as tar:
            assert f"{key}.png" in tar.getnames()
    for start in (1, 5):  # a mid-epoch resume skips the first batches undecoded: the same batches after
        rest = _keys_and_images(plan.make(0, start))
        assert [k for k, _ in rest] == [k for k, _ in full[start:]]
        for (_, got), (_, want) in zip(rest, full[start:]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Read without a plan (evaluation), the stream yields every decodable image once.
    once = [k for _, _, k in build_dataset(cfg, "train", None).configured(with_keys=True)]
    assert len(once) == 44 and set(once) == set(keys)


def test_pretrain_from_corrupt_shards_reports_the_skipped_images_or_stops_past_the_fraction(
        corrupt_shards, tmp_path, caplog):
    shards, broken = corrupt_shards
    args = ["pretrain", "--model", "debug", "--img-size", "16", "--batch-size", "8", "--epochs", "1",
            "--vis-every", "5", "--dataset", "shards", "--data", str(shards), "--num-workers", "2", "--no-tensorboard"]
    run = tmp_path / "run"
    assert main([*args, "--max-bad-fraction", "0.1", "--output-dir", str(run)]) == 0
    epoch = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert epoch[-1]["step"] == 6 and epoch[-1]["skipped_files"] == 4  # the clean shards' 6 steps
    report = [r.message for r in caplog.records if "unreadable image files skipped" in r.message]
    assert report and report[-1].startswith("4 unreadable image files skipped")
    assert {name.split("/")[1] for name in report[-1].split("first: ")[1].rstrip(")").split(", ")} == set(broken)
    # 4 of 48 is more than the default --max-bad-fraction 0.05: a clear error, exit status 2. In a process of its
    # own: the workers that found the images must stop with the error, not hang the interpreter's exit.
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    strict = subprocess.run([sys.executable, "-m", "maelab", *args, "--output-dir", str(tmp_path / "strict")],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert strict.returncode == 2, strict.stderr[-3000:]
    error = [line for line in strict.stderr.splitlines() if line.startswith("maelab: error:")]
    assert len(error) == 1 and "Traceback" not in strict.stderr  # the one-line error, not the worker's traceback
    assert "images in the shards could not be decoded, more than --max-bad-fraction 0.05" in error[0]
    assert "maelab shard" in error[0]


def test_pretrain_finetune_linprobe_knn_from_shards(shard_dir, tmp_path):
    base = ["--dataset", "shards", "--data", str(shard_dir), "--no-tensorboard"]
    run = tmp_path / "pre"
    assert main(["pretrain", "--model", "debug", "--img-size", "16", "--batch-size", "8", "--epochs", "1",
                 "--num-workers", "2", "--output-dir", str(run), *base]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epoch = [r for r in records if r["event"] == "epoch"]
    # 8 shards, 2 workers: 4 shards (24 images) each = 3 batches of 8 per worker.
    assert len(epoch) == 1 and epoch[0]["step"] == 6 and np.isfinite(epoch[0]["loss"])
    _, meta = load_checkpoint(run / "checkpoint-last.safetensors")
    assert meta.data_info["class_names"] == list(CLASSES) and meta.extra["data"]["dataset"] == "shards"
    assert (run / "recon.png").exists()

    ft = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(run), "--batch-size", "8", "--epochs", "1",
                 "--output-dir", str(ft), "--no-tensorboard"]) == 0  # the data comes from the checkpoint
    assert (ft / "metrics.json").exists()
    lp = tmp_path / "lp"
    assert main(["linprobe", "--checkpoint", str(run), "--batch-size", "8", "--epochs", "2", "--augment",
                 "--optimizer", "lars", "--output-dir", str(lp), *base]) == 0
    assert [json.loads(line)["step"] for line in (lp / "log.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "epoch"] == [6, 12]
    knn = tmp_path / "knn"
    assert main(["knn", "--checkpoint", str(run), "--train-subset", "20", "--output-dir", str(knn), *base]) == 0
    result = json.loads((knn / "knn.json").read_text())
    assert result["train_images"] == 20 and sum(map(sum, result["confusion_matrix"])) == 12


@pytest.mark.parametrize("problem", ["missing", "empty", "too_few"])
def test_bad_shard_dir_exits_2_before_writing(shard_dir, tmp_path, capsys, problem):
    data = {"missing": tmp_path / "nope", "empty": tmp_path, "too_few": shard_dir}[problem]
    out = tmp_path / "run"
    # too_few: 2 workers get 4 shards (24 images) each, less than a batch of 32.
    batch = "32" if problem == "too_few" else "8"
    assert main(["pretrain", "--model", "debug", "--img-size", "16", "--batch-size", batch, "--dataset", "shards",
                 "--data", str(data), "--num-workers", "2", "--output-dir", str(out)]) == 2
    message = capsys.readouterr().err
    assert {"missing": "does not exist", "empty": "maelab shard", "too_few": "--max-per-shard"}[problem] in message
    assert not out.exists()


@pytest.mark.parametrize("corrupt", [False, True], ids=["clean", "corrupt"])
def test_shard_run_resumes_mid_epoch_exactly_with_the_same_workers(shard_dir, corrupt_shards, tmp_path, capsys,
                                                                   corrupt):
    """With corrupt images too: their slots' substitutes do not move the batches a resume skips undecoded."""
    full, mid = tmp_path / "full", tmp_path / "mid"
    data = corrupt_shards[0] if corrupt else shard_dir
    args = ["pretrain", "--model", "debug", "--img-size", "16", "--batch-size", "4", "--epochs", "1",
            "--vis-every", "5", "--dataset", "shards", "--data", str(data), "--num-workers", "2", "--no-tensorboard",
            "--lr", "1e-3", "--warmup-epochs", "0", "--save-every-steps", "1", "--keep-last", "20",
            "--max-bad-fraction", "0.1"]
    assert main([*args, "--output-dir", str(full)]) == 0  # 2 workers x 4 shards x 24 images: 12 steps of 4
    shutil.copytree(full, mid)
    discard_after(mid, 5)  # as if stopped after step 5: odd, so worker 1 serves the first batch after it
    for ext in ("safetensors", "state.pt"):
        shutil.copyfile(mid / f"checkpoint-step0000005.{ext}", mid / f"checkpoint-last.{ext}")
    assert main(["pretrain", "--resume", str(mid), "--num-workers", "1"]) == 2
    assert "same --num-workers" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(mid), "--num-workers", "2"]) == 0
    a = load_file(str(full / "checkpoint-last.safetensors"))
    b = load_file(str(mid / "checkpoint-last.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    ends = [json.loads((run / "log.jsonl").read_text().splitlines()[-1]) for run in (full, mid)]
    assert ends[0]["step"] == ends[1]["step"] == 12 and ends[0]["loss"] == ends[1]["loss"]


@pytest.mark.slow  # one torchrun launch of 2 processes: ~15 s
def test_two_ranks_stream_uneven_shards_in_step(tmp_path):
    """23 images in shards of 3 (the last holds 2): ranks get unequal shares, but run the same steps (no hang)."""
    rng = np.random.default_rng(1)
    for i in range(23 + 6):
        split, label = ("train" if i < 23 else "test"), i % 2
        path = tmp_path / "images" / split / CLASSES[label] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(path)
    assert main(["shard", str(tmp_path / "images"), str(tmp_path / "shards"), "--max-per-shard", "3"]) == 0
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "maelab",
           "pretrain", "--model", "debug", "--img-size", "16", "--batch-size", "2", "--epochs", "2",
           "--num-workers", "2",
           "--dataset", "shards", "--data", str(tmp_path / "shards"), "--no-tensorboard", "--output-dir", str(run)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    # 8 shards over 2 ranks x 2 workers: 2 each, at least 2 + 3 images = 2 batches of 2 per worker, 4 steps per epoch.
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert [r["step"] for r in epochs if r["event"] == "epoch"] == [4, 8]
