"""TensorBoard event files are a faithful view of the JSONL log; the loop logs the gradient norm."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maelab.cli import main
from maelab.train import tensorboard as mirror_module
from maelab.train.optim import total_grad_norm
from maelab.train.rundir import JsonlLog
from maelab.train.tensorboard import TensorBoardMirror, scalars

RUN = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
       "--batch-size", "16", "--epochs", "2", "--log-every", "1"]


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tb") / "run"
    assert main([*RUN, "--output-dir", str(run)]) == 0
    return run


def test_scalars_match_jsonl_log(tb_run):
    records = JsonlLog(tb_run / "log.jsonl").records()
    steps = [r for r in records if r["event"] == "step"]
    assert len(steps) == 8 and all("grad_norm" in r for r in steps)
    acc = _events(tb_run)
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    assert {"step/loss", "step/lr", "step/img_per_s", "step/grad_norm", "epoch/loss"} <= set(expected)
    assert set(acc.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        logged = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in logged] == [s for s, _ in points], tag
        for (_, got), (_, want) in zip(logged, points):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12), (tag, got, want)


def test_reconstruction_grid_as_image(tb_run):
    epochs = [r for r in JsonlLog(tb_run / "log.jsonl").records() if r["event"] == "epoch"]
    images = _events(tb_run).Images("reconstruction")
    assert [im.step for im in images] == [r["step"] for r in epochs]
    from PIL import Image

    with Image.open(tb_run / "recon_epoch002.png") as png:
        assert (images[-1].width, images[-1].height) == png.size


def test_no_tensorboard_and_grad_norm_with_clipping(tmp_path):
    run = tmp_path / "run"
    assert main([*RUN, "--epochs", "1", "--clip-grad", "1e-3", "--no-tensorboard", "--output-dir", str(run)]) == 0
    assert not list(run.glob("events.out.tfevents.*"))
    steps = [r for r in JsonlLog(run / "log.jsonl").records() if r["event"] == "step"]
    # The norm is measured before clipping, so it stays far above the clipping threshold.
    assert len(steps) == 4 and all(r["grad_norm"] > 1e-2 for r in steps)


def test_total_grad_norm_is_what_clipping_reports():
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(5, 3)), torch.nn.Parameter(torch.zeros(7)),
              torch.nn.Parameter(torch.zeros(2))]
    for p in params[:2]:
        p.grad = torch.randn(p.shape, generator=gen)
    norm = total_grad_norm(params)
    manual = torch.cat([params[0].grad.flatten(), params[1].grad]).norm()
    assert torch.allclose(norm, manual)
    before = [p.grad.clone() for p in params[:2]]
    assert torch.allclose(torch.nn.utils.clip_grad_norm_(params, 1e9), norm)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, params[:2]))


def test_resumed_run_still_matches_jsonl_log(tmp_path):
    run = tmp_path / "run"
    assert main([*RUN, "--stop-after", "1", "--output-dir", str(run)]) == 0
    assert main(["pretrain", "--resume", str(run)]) == 0
    records = JsonlLog(run / "log.jsonl").records()
    acc = _events(run)
    losses = [(r["step"], r["loss"]) for r in records if r["event"] == "step"]
    logged = [(e.step, e.value) for e in acc.Scalars("step/loss")]
    assert [s for s, _ in logged] == [s for s, _ in losses]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(logged, losses))


def test_a_missing_tensorboard_is_reported_once_per_process(tmp_path, monkeypatch, caplog):
    """A --time-budget run opens a throw-away log before its own: the note is not repeated."""
    real = mirror_module.importlib.util.find_spec
    monkeypatch.setattr(mirror_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    mirror_module._say_not_installed.cache_clear()
    with caplog.at_level(logging.INFO, logger="maelab.train.tensorboard"):
        assert TensorBoardMirror.open(tmp_path / "a", True) is None
        assert TensorBoardMirror.open(tmp_path / "b", True) is None
    assert sum("tensorboard is not installed" in r.message for r in caplog.records) == 1
    mirror_module._say_not_installed.cache_clear()
