"""The loop's NaN/inf handling on a tiny linear model: stop (default) or skip with a limit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from maelab.train.config import LoopConfig, OptimConfig
from maelab.train.environment import Environment
from maelab.train.loader import make_loader_fn
from maelab.train.loop import StepOutput, TrainingDiverged, TrainLoop
from maelab.train.rundir import JsonlLog
from maelab.train.state import Progress

BAD_ITERS = {3, 7}  # 0-based iterations (= optimizer steps 4 and 8 without accumulation) with a NaN loss


def build(tmp_path, **loop_options) -> tuple[TrainLoop, nn.Linear, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = TensorDataset(torch.randn(40, 4), torch.arange(40))
    env = Environment(torch.device("cpu"))
    snapshots: list[torch.Tensor] = []
    calls = iter(range(10**6))

    def step(net, batch, generator):
        snapshots.append(net.weight.detach().clone())
        loss = net(batch[0]).pow(2).mean()
        if next(calls) in BAD_ITERS:
            loss = loss * math.nan
        return StepOutput(loss=loss, batch_size=batch[0].shape[0])

    cfg = LoopConfig(epochs=1, batch_size=4, log_every=1, **loop_options)
    loop = TrainLoop(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step_fn=step,
        make_loader=make_loader_fn(data, 4, 0, env, 0), steps_per_epoch=10, loop=cfg,
        optim=OptimConfig(lr=0.1, warmup_epochs=0), env=env, log=JsonlLog(tmp_path / "log.jsonl"), effective_batch=4,
    )
    return loop, model, snapshots


def test_nonfinite_loss_stops_at_its_step_without_applying_it(tmp_path):
    loop, model, snapshots = build(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at optimizer step 4\b.*--on-nonfinite skip"):
        loop.run(Progress())
    assert torch.isfinite(model.weight).all()
    assert torch.equal(model.weight, snapshots[3])  # the bad step changed nothing


def test_skip_counts_logs_and_leaves_weights_untouched(tmp_path):
    loop, model, snapshots = build(tmp_path, on_nonfinite="skip")
    history = loop.run(Progress())
    assert loop.nonfinite_skipped == 2
    assert torch.isfinite(model.weight).all()
    for it in BAD_ITERS:
        assert torch.equal(snapshots[it], snapshots[it + 1])  # skipped: no update
    assert not torch.equal(snapshots[0], snapshots[1])  # a good step does update
    skipped = [r for r in JsonlLog(tmp_path / "log.jsonl").records() if r["event"] == "nonfinite"]
    assert [(r["step"], r["skipped"]) for r in skipped] == [(4, 1), (8, 2)]
    assert all(math.isnan(r["loss"]) for r in skipped)
    assert math.isfinite(history[0]["loss"])  # the epoch mean leaves the bad batches out


def test_skip_limit_stops_the_run(tmp_path):
    loop, _, _ = build(tmp_path, on_nonfinite="skip", max_nonfinite=1)
    with pytest.raises(TrainingDiverged, match=r"2 optimizer steps had a non-finite loss \(the last at step 8\).*"
                                               r"--max-nonfinite 1"):
        loop.run(Progress())
