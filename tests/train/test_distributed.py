"""torchrun data parallelism: 2 Gloo ranks on CPU follow the 1-process trajectory, and their checkpoint resumes on 1."""

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

from maelab.models import MaskedAutoencoder, get_config
from maelab.train.checkpoint_store import discard_after
from maelab.train.distributed import rank_rows, steps_per_epoch
from maelab.train.environment import Environment
from maelab.train.loader import make_loader_fn

SRC = str(Path(__file__).resolve().parents[2] / "src")
COMMON = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--epochs", "2",
          "--stop-after", "1", "--log-every", "1", "--vis-every", "10", "--lr", "1e-3", "--warmup-epochs", "0"]


def _run(args: list[str], nproc: int = 1, status: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*launcher, "-m", "maelab", *args] if nproc > 1 else [sys.executable, "-m", "maelab", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == status, result.stderr[-3000:]
    return result


@pytest.mark.slow  # six interpreter launches: ~1 min on an idle 2-core machine, minutes on a busy one
def test_two_gloo_ranks_match_one_process_and_resume_on_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*COMMON, "--batch-size", "16", "--output-dir", str(one)])
    out = _run([*COMMON, "--batch-size", "8", "--save-every-steps", "2", "--keep-last", "3", "--output-dir", str(two)],
               nproc=2)
    assert "effective batch 16 (8 per device x 2 devices x 1 accumulation)" in out.stderr
    a = load_file(str(one / "checkpoint-last.safetensors"))
    b = load_file(str(two / "checkpoint-last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if key.endswith("attn.qkv.bias"):
            # The key bias has an exactly zero gradient (softmax ignores a shift shared by all keys); Adam
            # turns its float noise, which depends on the summation order, into lr-sized steps. Skip it.
            third = x.shape[0] // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)  # pretrain seeds with --seed 0 before building the model: its initial weights
    init = MaskedAutoencoder(get_config("debug")).state_dict()
    # 100x the tolerance above
    assert (a["blocks.0.attn.qkv.weight"] - init["blocks.0.attn.qkv.weight"]).abs().max() > 1e-3
    steps_1 = [line for line in (one / "log.jsonl").read_text().splitlines() if '"event": "step"' in line]
    steps_2 = [line for line in (two / "log.jsonl").read_text().splitlines() if '"event": "step"' in line]
    assert len(steps_1) == len(steps_2) == 4  # 64 images / global batch 16, logged by rank 0 only
    # From its mid-epoch checkpoint (step 2 of 4) two ranks continue exactly: the same weights and epoch loss.
    mid = tmp_path / "mid"
    shutil.copytree(two, mid)
    discard_after(mid, 2)
    for ext in ("safetensors", "state.pt"):
        shutil.copyfile(mid / f"checkpoint-step0000002.{ext}", mid / f"checkpoint-last.{ext}")
    # One process cannot continue it: a mid-epoch position counts global batches of two ranks.
    refused = _run(["pretrain", "--resume", str(mid), "--epochs", "2", "--stop-after", "1"], status=2)
    assert "saved mid-epoch by 2 process(es)" in refused.stderr
    _run(["pretrain", "--resume", str(mid), "--epochs", "2", "--stop-after", "1"], nproc=2)
    c = load_file(str(mid / "checkpoint-last.safetensors"))
    for key in b:
        assert torch.equal(b[key], c[key]), key
    ends = [json.loads((run / "log.jsonl").read_text().splitlines()[-1]) for run in (two, mid)]
    assert ends[0]["event"] == ends[1]["event"] == "epoch" and ends[0]["loss"] == ends[1]["loss"]
    # The run two ranks saved at the epoch's end continues in one process (per-device batch 8 is kept from its config).
    _run(["pretrain", "--resume", str(two), "--epochs", "2"])
    assert '"epoch": 1' in (two / "log.jsonl").read_text().splitlines()[-1]


class _NoisyItems:
    """Item i is (i, a random draw): shows which image a batch holds and the RNG its augmentation saw."""

    def __len__(self):
        return 20

    def __getitem__(self, i):
        return i, torch.rand(())


def _epoch(world: int, rank: int, batch: int, start: int = 0) -> list[tuple[list[int], list[float]]]:
    env = Environment(device=torch.device("cpu"), rank=rank, world_size=world)
    loader = make_loader_fn(_NoisyItems(), batch, 1234, env, num_workers=0)(3, start)
    return [(ids.tolist(), noise.tolist()) for ids, noise in loader]


def test_rank_shares_partition_the_global_batch_with_rank_independent_augmentation():
    whole = _epoch(1, 0, 4)  # one process, batch 4: 5 batches
    shares = [_epoch(2, r, 2) for r in range(2)]  # two ranks, batch 2 each
    assert len(whole) == len(shares[0]) == len(shares[1]) == 5
    for k, (ids, noise) in enumerate(whole):
        # Rank r's j-th sample is the global batch's row r + 2j (what rank_rows keeps of the masks).
        assert rank_rows(torch.tensor(ids), 0, 2).tolist() == shares[0][k][0]
        assert rank_rows(torch.tensor(ids), 1, 2).tolist() == shares[1][k][0]
        # Every image gets the same augmentation randomness whichever rank loads it.
        seen = dict(zip(shares[0][k][0] + shares[1][k][0], shares[0][k][1] + shares[1][k][1]))
        assert [seen[i] for i in ids] == noise
    assert len({i for ids, _ in whole for i in ids}) == 20
    # A mid-epoch start counts global batches on every rank.
    assert _epoch(2, 1, 2, start=3) == shares[1][3:]
    assert rank_rows(torch.arange(8), 1, 2).tolist() == [1, 3, 5, 7]
    assert steps_per_epoch(64, 8, 2) == 4
