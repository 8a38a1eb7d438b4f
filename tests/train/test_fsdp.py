"""pretrain / finetune --fsdp on 2 Gloo CPU ranks (torchrun): the 1-process trajectory, full checkpoints that
resume anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maelab.checkpoint import load_checkpoint
from maelab.cli import main
from maelab.models import MaskedAutoencoder, get_config
from maelab.models.classifier import build_vit
from maelab.train.checkpoint_store import discard_after
from maelab.train.config import OptimConfig
from maelab.train.fsdp import build_sharded, full_state_dict, load_optimizer_state
from maelab.train.optim import build_adamw, lr_at

SRC = str(Path(__file__).resolve().parents[2] / "src")
COMMON = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--epochs", "2",
          "--stop-after", "1", "--log-every", "1", "--vis-every", "10", "--lr", "1e-3", "--warmup-epochs", "0",
          "--no-tensorboard"]


def _run(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, "-m", "maelab", *args] if nproc > 1 else [sys.executable, "-m", "maelab", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-8000:]
    return result


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        if key.endswith("attn.qkv.bias"):  # key bias: zero true gradient, Adam amplifies float noise
            third = x.shape[0] // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow  # four interpreter launches, two under torchrun: ~40 s on an idle 2-core machine
def test_fsdp_two_ranks_match_one_process_and_checkpoint_resumes_on_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*COMMON, "--batch-size", "16", "--output-dir", str(one)])
    out = _run([*COMMON, "--batch-size", "8", "--fsdp", "--save-every-steps", "2", "--keep-last", "3",
                "--output-dir", str(two)], nproc=2)
    assert "effective batch 16 (8 per device x 2 devices x 1 accumulation)" in out.stderr
    # Written full by rank 0: the same weights as one process with the same global batch.
    a = load_file(str(one / "checkpoint-last.safetensors"))
    b = load_file(str(two / "checkpoint-last.safetensors"))
    _assert_close(a, b)
    torch.manual_seed(0)  # pretrain seeds with --seed 0 before building the model: its initial weights
    init = MaskedAutoencoder(get_config("debug")).state_dict()
    assert (b["blocks.0.attn.qkv.weight"] - init["blocks.0.attn.qkv.weight"]).abs().max() > 1e-3  # 100x the tolerance
    # The optimizer state is saved under parameter names and loads into a plain optimizer: the same moments.
    states = [torch.load(run / "checkpoint-last.state.pt", weights_only=True)["optimizer"] for run in (one, two)]
    assert all(isinstance(k, str) for k in states[1]["state"])
    model = MaskedAutoencoder(get_config("debug"))
    optimizer = build_adamw(model, OptimConfig())
    load_optimizer_state(model, optimizer, states[1])
    loaded = optimizer.state_dict()["state"]
    for i, moments in states[0]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(loaded[i][name], moments[name], rtol=1e-3, atol=1e-7)
    # From its mid-epoch checkpoint (step 2 of 4) two FSDP ranks continue exactly: the full checkpoint is re-sharded.
    mid = tmp_path / "mid"
    shutil.copytree(two, mid)
    discard_after(mid, 2)
    for ext in ("safetensors", "state.pt"):
        shutil.copyfile(mid / f"checkpoint-step0000002.{ext}", mid / f"checkpoint-last.{ext}")
    _run(["pretrain", "--resume", str(mid), "--epochs", "2", "--stop-after", "1", "--fsdp"], nproc=2)
    c = load_file(str(mid / "checkpoint-last.safetensors"))
    assert all(torch.equal(b[key], c[key]) for key in b)
    # One plain process continues the FSDP run (its own per-device batch 8 from config.json) to the end.
    _run(["pretrain", "--resume", str(two), "--epochs", "2"])
    last = json.loads((two / "log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "epoch" and last["epoch"] == 1 and last["step"] == 4 + 8


# Fine-tuning without the randomness that depends on the per-rank batch (mixup pairs rows of a batch; drop path
# draws from the global RNG, the same stream on every rank); crops, RandAugment and erasing are seeded per image.
FINETUNE = ["finetune", "--init", "none", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
            "--epochs", "2", "--stop-after", "1", "--log-every", "1", "--mixup", "0", "--cutmix", "0",
            "--drop-path", "0",
            "--lr", "1e-3", "--warmup-epochs", "0", "--no-tensorboard"]


@pytest.mark.slow  # three interpreter launches, one under torchrun: ~30 s on an idle 2-core machine
def test_fsdp_finetune_matches_one_process_and_resumes_on_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*FINETUNE, "--batch-size", "16", "--output-dir", str(one)])
    out = _run([*FINETUNE, "--batch-size", "8", "--fsdp", "--output-dir", str(two)], nproc=2)
    assert "effective batch 16 (8 per device x 2 devices x 1 accumulation)" in out.stderr
    a = load_file(str(one / "checkpoint-last.safetensors"))
    b = load_file(str(two / "checkpoint-last.safetensors"))
    _assert_close(a, b)
    assert b.keys() == load_file(str(two / "checkpoint-best.safetensors")).keys()  # gathered whole too
    torch.manual_seed(0)  # finetune seeds with --seed 0 before building the classifier: its initial weights
    init = build_vit(load_checkpoint(one / "checkpoint-last.safetensors")[1].model_config).state_dict()
    assert (b["blocks.0.attn.qkv.weight"] - init["blocks.0.attn.qkv.weight"]).abs().max() > 1e-3  # 100x the tolerance
    state = torch.load(two / "checkpoint-last.state.pt", weights_only=True)["optimizer"]
    assert all(isinstance(k, str) for k in state["state"]) and len(state["param_groups"]) > 2  # layer-decay groups
    # One plain process continues the FSDP run (per-device batch 8 from config.json) to the end of epoch 2.
    out = _run(["finetune", "--resume", str(two), "--epochs", "2"])
    # The validation split (--val-fraction 0.1) holds 6 of the 64 images out: an epoch is 58 // 16 = 3 steps on
    # 2 ranks, then 58 // 8 = 7 on one, and the log says so; the schedule, in epochs, still ends at epoch 2's end.
    train = 64 - round(64 * 0.1)
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    last = records[-1]
    assert last["event"] == "epoch" and last["epoch"] == 1 and last["step"] == train // 16 + train // 8
    assert "an epoch is 7 optimizer steps (was 3); the lr schedule still ends at the end of epoch 2" in out.stderr
    assert [(r["saved_world_size"], r["world_size"]) for r in records if r["event"] == "resize"] == [(2, 1)]
    min_lr = json.loads((two / "config.json").read_text())["optim"]["min_lr"]
    lrs = [r["lr"] for r in records if r["event"] == "step" and r["epoch"] == 1]
    assert lrs == pytest.approx([lr_at(1 + i / 7, 1e-3, min_lr, 0, 2) for i in range(7)])
    assert [row["epoch"] for row in json.loads((two / "metrics.json").read_text())["epochs"]] == [0, 1]
    # Partial fine-tuning (a wrapper keeps the frozen part in eval mode) with accumulation: the frozen part stays put.
    part = tmp_path / "part"
    _run([*FINETUNE, "--batch-size", "8", "--fsdp", "--tune-blocks", "0.5", "--accum-iter", "2", "--output-dir",
          str(part)], nproc=2)
    c = load_file(str(part / "checkpoint-last.safetensors"))
    last_block = f"blocks.{sum(k.endswith('.attn.qkv.weight') for k in c) - 1}."
    moved = {k for k in c if not torch.equal(c[k], init[k])}
    assert moved and all(k.startswith((last_block + "mlp.", last_block + "norm2.", "fc_norm.", "head.")) for k in moved)


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_fsdp_without_a_distributed_launch_exits_2_before_writing(tmp_path, capsys, command):
    out = tmp_path / "run"
    source = ["--model", "debug"] if command == "pretrain" else ["--init", "none", "--model", "debug"]
    assert main([command, *source, "--dataset", "synthetic", "--fsdp", "--output-dir", str(out)]) == 2
    assert f"torchrun --nproc-per-node N (N >= 2) -m maelab {command}" in capsys.readouterr().err
    assert not out.exists()


def test_linprobe_has_no_fsdp_option(tmp_path, capsys):
    """The probe trains a small head on a frozen encoder: nothing to shard, so there is no --fsdp to pass."""
    out = tmp_path / "run"
    assert main(["linprobe", "--init", "none", "--model", "debug", "--dataset", "synthetic", "--augment", "--fsdp",
                 "--output-dir", str(out)]) == 2
    assert "--fsdp" in capsys.readouterr().err
    assert not out.exists()


def test_build_sharded_builds_weights_once_in_host_memory_and_the_rest_on_meta(tmp_path):
    """Rank 0's build(True) supplies the weights; the sharded copy is built on the meta device, so no
    device holds the whole model (one Gloo rank here; the torchrun tests above cover two)."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        calls = []

        def build(materialize: bool) -> torch.nn.Module:
            torch.manual_seed(0)
            model = MaskedAutoencoder(get_config("debug"))
            calls.append((materialize, model.pos_embed.device.type))
            return model

        model = build_sharded(build, torch.device("cpu"), is_main=True)
        assert calls == [(True, "cpu"), (False, "meta")]
        got = full_state_dict(model)
        torch.manual_seed(0)
        expected = MaskedAutoencoder(get_config("debug")).state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    finally:
        torch.distributed.destroy_process_group()
