"""Fixtures of official-format MAE checkpoints (built by :mod:`official_format`, no downloads) and of maelab ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_format import official_state_dict, save_official


@pytest.fixture
def official_files(tmp_path) -> dict[str, Path]:
    """The three release kinds, small: encoder-only, *_full (norm pixels), visualize (raw pixels)."""
    full = official_state_dict(seed=1)
    return {
        "encoder": save_official(tmp_path / "mae_pretrain_vit_tiny.pth", official_state_dict(decoder=False, seed=2)),
        "full": save_official(tmp_path / "mae_pretrain_vit_tiny_full.pth", full),
        "visualize": save_official(tmp_path / "mae_visualize_vit_tiny.pth", official_state_dict(seed=3)),
    }


def perturb(model: torch.nn.Module, seed: int, skip: tuple[str, ...] = ()) -> None:
    """Move every tensor off its structured init (zero biases, unit norms), so that a mis-mapped
    tensor cannot hide behind an identity value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point() and name not in skip:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture
def maelab_checkpoint(tmp_path) -> Path:
    """A maelab "mae" checkpoint: the debug preset with 3 channels, perturbed weights (sin-cos
    position tables kept, as training keeps them fixed)."""
    from maelab.checkpoint import CheckpointMeta, save_checkpoint
    from maelab.models import create_model

    torch.manual_seed(0)
    model = create_model("debug", in_chans=3)
    perturb(model, 1, skip=("pos_embed", "decoder_pos_embed"))
    info = dict(name="synthetic", channels=3, img_size=[32, 32], mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3],
                num_classes=0, class_names=[])
    meta = CheckpointMeta(kind="mae", model_config=model.config.to_dict(), data_info=info, epoch=1,
                          extra={"model_name": "debug"})
    return save_checkpoint(tmp_path / "ckpt" / "checkpoint-last", model.state_dict(), meta)
