"""--amp: auto picks bf16 where the GPU supports it, else fp16; fp16's gradient scaler is checkpointed and resumes
exactly."""

from __future__ import annotations

import json

import pytest
import torch

from maelab.checkpoint import load_checkpoint, load_train_state
from maelab.cli import main
from maelab.train.environment import amp_dtype

SMALL = ["--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64", "--batch-size", "16",
         "--log-every", "2", "--blr", "1e-3", "--amp", "fp16", "--device", "cpu"]


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_is_bf16_where_supported_else_fp16_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: bf16 and not including_emulation)
    assert amp_dtype("auto", torch.device("cuda")) == expected
    assert amp_dtype("auto", torch.device("cpu")) is None and amp_dtype("auto", torch.device("mps")) is None
    assert amp_dtype("fp16", torch.device("cpu")) == torch.float16
    assert amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16 and amp_dtype("off", torch.device("cuda")) is None


def test_fp16_scaler_state_is_checkpointed_and_resume_is_exact(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["pretrain", *SMALL, "--epochs", "2", "--output-dir", str(straight)]) == 0
    assert main(["pretrain", *SMALL, "--epochs", "2", "--stop-after", "1", "--output-dir", str(stopped)]) == 0
    scaler = load_train_state(stopped / "checkpoint-last.safetensors")["loop"]["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler  # the scaler ran, and its state is saved
    assert main(["pretrain", "--resume", str(stopped)]) == 0
    a, _ = load_checkpoint(straight)
    b, _ = load_checkpoint(stopped)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (load_train_state(straight / "checkpoint-last.safetensors")["loop"]["scaler"]
            == load_train_state(stopped / "checkpoint-last.safetensors")["loop"]["scaler"])
    losses = [json.loads(line)["loss"] for line in (stopped / "log.jsonl").read_text().splitlines()]
    assert all(loss == loss for loss in losses)  # finite: fp16 with scaling trains


def test_bf16_and_fp32_runs_save_no_scaler(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", *SMALL[:-4], "--amp", "off", "--epochs", "1", "--output-dir", str(run)]) == 0
    assert load_train_state(run / "checkpoint-last.safetensors")["loop"]["scaler"] is None
