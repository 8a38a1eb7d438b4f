import math
import os

import pytest
import torch

from maelab.checkpoint import (
    CheckpointMeta,
    atomic_write,
    load_checkpoint,
    load_train_state,
    read_meta,
    save_checkpoint,
)
from maelab.models import create_model
from maelab.train.config import OptimConfig
from maelab.train.optim import build_adamw, lr_at, set_lr


def test_lr_schedule_warmup_then_half_cosine():
    assert lr_at(0, 1.0, 0.0, 10, 100) == 0.0
    assert lr_at(5, 1.0, 0.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(10, 1.0, 0.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 0.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    mid = 10 + 90 * 0.25
    assert lr_at(mid, 2.0, 0.0, 10, 100) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_lr_scaling_rule():
    assert OptimConfig(blr=1.5e-4).absolute_lr(4096) == pytest.approx(2.4e-3)
    assert OptimConfig(lr=0.01).absolute_lr(4096) == 0.01
    with pytest.raises(ValueError):
        OptimConfig(blr=0)


def test_weight_decay_groups_exclude_norms_biases_and_tokens():
    model = create_model("debug")
    opt = build_adamw(model, OptimConfig(weight_decay=0.05))
    assert opt.defaults["betas"] == (0.9, 0.95)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "blocks.0.attn.qkv.weight" in decayed and "decoder_pred.weight" in decayed
    for name in ("cls_token", "mask_token", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "norm.bias"):
        assert name in plain, name
    assert not any("pos_embed" in n for n in decayed | plain)  # frozen, not optimized
    set_lr(opt, 0.5)
    assert all(g["lr"] == 0.5 for g in opt.param_groups)


def test_checkpoint_round_trip_with_metadata(tmp_path):
    model = create_model("debug")
    meta = CheckpointMeta(kind="mae", model_config=model.config.to_dict(), data_info={"name": "x"}, epoch=3)
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), meta, {"epoch": 3, "step": 7})
    assert path.name == "ckpt.safetensors"
    weights, got = load_checkpoint(path)
    save_id = got.extra.pop("save_id")
    assert got == meta
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert load_train_state(path) == {"epoch": 3, "step": 7, "save_id": save_id}
    assert read_meta(tmp_path / "ckpt").epoch == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_non_maelab_and_pickle_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="no maelab metadata"):
        read_meta(plain)
    pth = tmp_path / "x.pth"
    pth.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .safetensors"):
        read_meta(pth)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_training_state_is_not_executed(tmp_path):
    model = create_model("debug")
    meta = CheckpointMeta(kind="mae", model_config=model.config.to_dict())
    save_checkpoint(tmp_path / "ckpt", model.state_dict(), meta)
    _Evil.marker = tmp_path / "pwned"
    torch.save({"epoch": _Evil()}, tmp_path / "ckpt.state.pt")
    with pytest.raises(Exception):
        load_train_state(tmp_path / "ckpt.safetensors")
    assert not _Evil.marker.exists()


def test_atomic_write_keeps_previous_file_when_writer_fails(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]



def test_warmup_covering_the_whole_run_is_warned_about(tmp_path, caplog):
    from maelab.cli import main

    args = ["pretrain", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
            "--batch-size", "32", "--epochs", "1"]
    with caplog.at_level("WARNING"):
        assert main([*args, "--warmup-epochs", "1", "--output-dir", str(tmp_path / "a")]) == 0
    assert "never decays" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main([*args, "--warmup-epochs", "0.5", "--output-dir", str(tmp_path / "b")]) == 0
    assert "never decays" not in caplog.text
