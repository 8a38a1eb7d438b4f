"""maelab bench: the analytic FLOPs against PyTorch's own counter, and a debug run writing valid JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from maelab.bench.config import BenchConfig
from maelab.bench.flops import block_macs, encoder_flops, mae_flops
from maelab.bench.loader import device_flip_normalize
from maelab.cli import main
from maelab.models import MaskedAutoencoder, get_config


def _counted(fn) -> int:
    # The math attention kernel decomposes into matmuls the counter sees (fused CPU kernels are not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("mask_tokens", [False, True])
def test_analytic_flops_match_torch_flop_counter(mask_tokens):
    cfg = dataclasses.replace(get_config("debug"), encoder_mask_tokens=mask_tokens)
    torch.manual_seed(0)
    model = MaskedAutoencoder(cfg)
    imgs = torch.randn(2, cfg.in_chans, *cfg.img_size)
    flops = mae_flops(cfg)
    assert _counted(lambda: model(imgs)) == 2 * flops.forward
    # Backward = 2x forward, except the gradient w.r.t. the input images, which is never computed.
    assert _counted(lambda: model(imgs).loss.backward()) == 2 * (flops.train_step - flops.patch_embed)
    assert _counted(lambda: model.forward_encoder(imgs)) == 2 * encoder_flops(cfg)


def test_flops_golden_vit_base():
    base = mae_flops(get_config("mae_vit_base_patch16"))
    # 196 patches, 49 visible: the encoder sees 50 tokens, the decoder 197.
    assert base.encoder_tokens == 50
    assert base.encoder == 2 * 12 * (50 * 12 * 768**2 + 2 * 50**2 * 768)
    assert block_macs(197, 512, 4.0) == 197 * 12 * 512**2 + 2 * 197**2 * 512
    with_tokens = mae_flops(get_config("mae_vit_base_patch16", encoder_mask_tokens=True))
    assert with_tokens.encoder_tokens == 197 and with_tokens.forward > 2.3 * base.forward


def test_bench_debug_writes_valid_json(tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", "--models", "debug", "--batch-sizes", "4", "--variants", "mae", "mask_tokens", "decoder8",
            "decoder1", "block_mask", "bf16", "grad_ckpt", "--steps", "2", "--warmup", "1", "--matmul-size", "128",
            "--output", str(out)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["matmul_peak"][0]["flops_per_s"] > 0
    by_variant = {r["variant"]: r for r in report["results"]}
    assert set(by_variant) == {"mae", "mask_tokens", "decoder8", "block_mask", "grad_ckpt"}
    assert {s["variant"] for s in report["skipped"]} == {"decoder1", "bf16"}
    mae = by_variant["mae"]
    assert mae["img_per_s"] > 0 and 0 < mae["mfu"] and mae["peak_memory_mb"] > 0
    assert mae["inference_img_per_s"] > 0 and mae["encoder_tokens"] == 5
    assert by_variant["mask_tokens"]["encoder_tokens"] == 17 and by_variant["decoder8"]["decoder_depth"] == 8
    assert by_variant["block_mask"]["mask_strategy"] == "block" and mae["mask_strategy"] == "random"
    names = {q["name"] for q in report["ratios"]}
    assert any(n.startswith("asymmetric speedup") for n in names)
    assert any(n.startswith("block vs random") for n in names)
    assert "| debug | 4 | mae |" in (tmp_path / "bench.md").read_text()


def test_bench_loader_and_device_transform(tmp_path):
    assert main(["bench", "--models", "debug", "--batch-sizes", "8", "--variants", "mae", "--steps", "1",
                 "--warmup", "0", "--matmul-size", "64", "--loader", "--dataset", "synthetic",
                 "--output", str(tmp_path / "b")]) == 0
    loader = json.loads((tmp_path / "b.json").read_text())["loader"]
    assert loader["train_path"]["images"] > 0 and loader["uint8_device_path"]["img_per_s"] > 0
    imgs = torch.tensor([[[[0, 255]]], [[[10, 20]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    flipped = {tuple(device_flip_normalize(imgs, (0.0,), (1 / 255,), torch.Generator().manual_seed(s))[0, 0, 0]
                     .round().tolist()) for s in range(20)}
    assert flipped == {(0.0, 255.0), (255.0, 0.0)}  # either order, values only rescaled


def test_grad_checkpointing_gives_the_same_gradients():
    cfg = get_config("debug")
    torch.manual_seed(0)
    model = MaskedAutoencoder(cfg)
    imgs = torch.randn(3, cfg.in_chans, *cfg.img_size)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(imgs, generator=torch.Generator().manual_seed(1)).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_bench_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown model"):
        BenchConfig(models=("gigantic",))
    assert main(["bench", "--batch-sizes", "0"]) == 2
