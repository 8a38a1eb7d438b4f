"""``maelab finetune`` end to end, partial fine-tuning, layer decay, resolution change and bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from maelab.checkpoint import load_checkpoint, read_meta, save_checkpoint
from maelab.cli import main
from maelab.data import DataConfig
from maelab.evaluate.classifier import classifier_config, load_classifier
from maelab.evaluate.features import vit_features
from maelab.evaluate.source import load_encoder, load_pretrained
from maelab.finetune.command import build_optimizer, freeze_for_partial_tuning
from maelab.finetune.config import FinetuneConfig
from maelab.models import get_config
from maelab.models.classifier import FrozenInEval, build_vit
from maelab.pos_embed import adapt_pos_embed, sincos_2d
from maelab.visualize.reconstruct import load_mae

FAST = ["--batch-size", "32", "--log-every", "2"]


def _finetune(pretrained_run, out, *extra):
    return main(["finetune", "--checkpoint", str(pretrained_run), *FAST, "--epochs", "1", "--output-dir", str(out),
                 *extra])


def _epochs(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]


def _debug_vit(depth: int = 2, pool: str = "avg", head: str = "linear", img_size: int = 32):
    mae = get_config("debug", depth=depth)
    data = DataConfig(dataset="synthetic", img_size=img_size, channels=1)
    return build_vit(classifier_config(mae, data, 4, global_pool=pool, head=head))


def test_finetune_end_to_end(pretrained_run, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(pretrained_run), *FAST, "--epochs", "2",
                 "--output-dir", str(out)]) == 0
    for name in ("config.json", "log.jsonl", "metrics.json", "confusion.png",
                 "checkpoint-best.safetensors", "checkpoint-last.safetensors"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert metrics["last"] == metrics["epochs"][-1]
    # "best" is chosen on the validation split, never on test.
    assert metrics["selected_on"] == "val"
    assert metrics["best"]["val_top1"] == max(e["val_top1"] for e in metrics["epochs"])
    # The test split is scored once, at the end, with the checkpoint chosen on validation (issue 33, point 4).
    assert 0 <= metrics["best"]["top1"] <= metrics["best"]["top5"] <= 100 and "top1" not in metrics["last"]
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"] == 32
    assert all("val_top1" in r and "test_top1" not in r for r in _epochs(out))
    meta = read_meta(out / "checkpoint-last.safetensors")
    assert meta.kind == "classifier" and meta.epoch == 2
    assert meta.extra["num_classes"] == 4 and meta.data_info["name"] == "synthetic"
    assert meta.model_config["global_pool"] == "avg" and meta.model_config["fc_norm"]
    model, _ = load_classifier(out / "checkpoint-best.safetensors")
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)


def test_finetune_from_scratch_without_checkpoint(tmp_path):
    out = tmp_path / "scratch"
    assert main(["finetune", "--init", "none", "--model", "debug", "--dataset", "synthetic", "--synthetic-size", "64",
                 *FAST, "--epochs", "1", "--output-dir", str(out)]) == 0
    assert read_meta(out / "checkpoint-last.safetensors").extra["init"] == "none"
    assert (out / "confusion.png").is_file()


def test_encoder_loads_exactly(pretrained_run):
    """Token-pooled features of the loaded timm ViT are the MAE's cls token; the avg-pool model
    takes every block and starts fc_norm fresh (timm's norm is an Identity there)."""
    mae, _, _ = load_mae(pretrained_run)
    pre = load_pretrained(pretrained_run, "test")
    probe = _debug_vit(pool="token", head="none").eval()
    load_encoder(probe, pre)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit_features(probe)(x), mae.forward_encoder(x, None)[:, 0], atol=1e-5, rtol=0)
    ft = _debug_vit()
    load_encoder(ft, pre)
    assert isinstance(ft.norm, torch.nn.Identity)
    assert torch.equal(ft.blocks[1].mlp.fc2.weight, pre.encoder["blocks.1.mlp.fc2.weight"])
    assert torch.equal(ft.fc_norm.weight, torch.ones(32))


@pytest.mark.parametrize("blocks,expected", [
    (1, {"blocks.1.", "fc_norm.", "head."}),
    (0.5, {"blocks.1.norm2.", "blocks.1.mlp.", "fc_norm.", "head."}),
    (0, {"fc_norm.", "head."}),
])
def test_tune_blocks_requires_grad_and_optimizer(blocks, expected):
    vit = _debug_vit()
    frozen = freeze_for_partial_tuning(vit, blocks)
    names = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(tuple(expected)) for n in names)
    assert all(any(n.startswith(e) for n in names) for e in expected)
    cfg = FinetuneConfig(init="none", tune_blocks=blocks)
    in_optimizer = {id(p) for g in build_optimizer(vit, cfg).param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in vit.parameters() if p.requires_grad}
    wrapped = FrozenInEval(vit, frozen).train()
    assert not vit.blocks[0].training and not vit.patch_embed.training and vit.head.training
    assert wrapped.training


def test_tune_blocks_beyond_depth_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        freeze_for_partial_tuning(_debug_vit(depth=2), 2.5)


@pytest.mark.parametrize("blocks", ["1", "0.5"])
def test_tune_blocks_changes_only_the_tuned_part(pretrained_run, tmp_path, blocks):
    out = tmp_path / f"ft{blocks}"
    assert _finetune(pretrained_run, out, "--tune-blocks", blocks) == 0
    before = load_pretrained(pretrained_run, "test").encoder
    after, _ = load_checkpoint(out / "checkpoint-last.safetensors")
    tuned = ("blocks.1.",) if blocks == "1" else ("blocks.1.norm2.", "blocks.1.mlp.")
    for key, value in before.items():
        if key.startswith("norm."):
            continue  # not part of the avg-pool classifier
        assert torch.equal(after[key], value) != key.startswith(tuned), key
    assert not torch.equal(after["fc_norm.weight"], torch.ones_like(after["fc_norm.weight"]))


def test_layer_decay_scales_follow_the_paper_formula():
    depth, decay = 4, 0.75
    vit = _debug_vit(depth=depth)
    optimizer = build_optimizer(vit, FinetuneConfig(init="none", layer_decay=decay))
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    num_layers = depth + 1
    for name, param in vit.named_parameters():
        group = group_of[id(param)]
        if name.startswith("blocks."):
            layer_id = int(name.split(".")[1]) + 1
        elif name.startswith(("patch_embed", "cls_token", "pos_embed")):
            layer_id = 0
        else:
            layer_id = num_layers  # fc_norm and head: scale 1
        assert group["lr_scale"] == pytest.approx(decay ** (num_layers - layer_id)), name
        no_decay = param.ndim <= 1 or name in ("pos_embed", "cls_token")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert group_of[id(vit.blocks[2].attn.qkv.weight)]["lr_scale"] == pytest.approx(0.75 ** 2)


def test_pos_embed_resampling():
    sincos = sincos_2d(32, (4, 4)).unsqueeze(0)  # (1, 17, 32)
    assert torch.equal(adapt_pos_embed(sincos, (4, 4), (6, 6))[0], sincos_2d(32, (6, 6)))
    learned = torch.randn(1, 17, 32, generator=torch.Generator().manual_seed(0))
    resized = adapt_pos_embed(learned, (4, 4), (6, 5))
    assert resized.shape == (1, 31, 32)
    assert torch.equal(resized[:, 0], learned[:, 0])
    assert adapt_pos_embed(learned, (4, 4), (4, 4)) is learned


def test_finetune_at_another_resolution(pretrained_run, tmp_path):
    out = tmp_path / "ft48"
    assert _finetune(pretrained_run, out, "--img-size", "48", "--tune-blocks", "0") == 0
    weights, meta = load_checkpoint(out / "checkpoint-last.safetensors")
    assert meta.model_config["img_size"] == [48, 48]
    assert torch.equal(weights["pos_embed"][0], sincos_2d(32, (6, 6)))


def test_bad_checkpoints_exit_2(pretrained_run, tmp_path, capsys):
    classifier = tmp_path / "ft"
    assert _finetune(pretrained_run, classifier, "--tune-blocks", "0") == 0
    capsys.readouterr()
    out = tmp_path / "never"

    assert main(["linprobe", "--checkpoint", str(classifier), "--output-dir", str(out)]) == 2
    assert "'classifier' checkpoint" in capsys.readouterr().err

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    assert main(["knn", "--checkpoint", str(foreign), "--output-dir", str(out)]) == 2
    assert "no maelab metadata" in capsys.readouterr().err

    assert _finetune(pretrained_run, out, "--channels", "3") == 2
    assert "--channels 3" in capsys.readouterr().err

    weights, meta = load_checkpoint(pretrained_run)
    weights["patch_embed.proj.weight"] = torch.zeros(32, 3, 8, 8)
    save_checkpoint(tmp_path / "tampered", weights, meta)
    assert _finetune(tmp_path / "tampered.safetensors", out) == 2
    assert "the tensors do not fit" in capsys.readouterr().err

    assert main(["finetune", *FAST, "--output-dir", str(out)]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--layer-decay", "2"], ["--tune-blocks", "0.3"], ["--tune-blocks", "5"],
                                   ["--batch-size", "31"], ["--img-size", "44"], ["--crop-scale", "0"],
                                   ["--crop-scale", "1.5"]])
def test_bad_options_exit_2_before_writing(pretrained_run, tmp_path, extra):
    out = tmp_path / "bad"
    assert _finetune(pretrained_run, out, *extra) == 2
    assert not out.exists()


def test_rand_augment_at_full_magnitude_works_with_current_pillow():
    """timm's Posterize at magnitude 10 asks for 0 bits, which Pillow >= 13 rejects; ours caps below 10."""
    from maelab.data import DataConfig, build_dataset, dataset_info
    from maelab.finetune.command import finetune_transform

    cfg = DataConfig(dataset="synthetic", synthetic_size=16)
    transform = finetune_transform(dataset_info(cfg), "rand-n15-m10-mstd0-inc1", 0.0)
    data = build_dataset(cfg, "train", transform)
    for i in range(40):
        assert data[i % len(data)][0].shape == (1, 32, 32)


def test_crop_scale_one_keeps_the_whole_image_and_the_default_crops():
    """--crop-scale 1 without RandAugment and erasing leaves each image whole (or mirrored); 0.08 crops it."""
    from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform
    from maelab.finetune.command import finetune_transform

    cfg = DataConfig(dataset="synthetic", synthetic_size=8)
    info = dataset_info(cfg)
    whole = build_dataset(cfg, "train", eval_transform(info))
    torch.manual_seed(0)
    kept = build_dataset(cfg, "train", finetune_transform(info, "", 0.0, crop_scale=1.0))
    cropped = build_dataset(cfg, "train", finetune_transform(info, "", 0.0))
    changed = 0
    for i in range(len(whole)):
        image = whole[i][0]
        for _ in range(4):
            out = kept[i][0]
            assert any(torch.allclose(out, view, atol=1e-5) for view in (image, image.flip(-1)))
            changed += not any(torch.allclose(cropped[i][0], view, atol=1e-2) for view in (image, image.flip(-1)))
    assert changed > 16


def test_train_subset_limits_the_training_images(pretrained_run, tmp_path):
    """--train-subset trains on that many images (it was once ignored by finetune), the test split stays whole."""
    out = tmp_path / "subset"
    assert _finetune(pretrained_run, out, "--train-subset", "40", "--batch-size", "8") == 0
    assert [e["step"] for e in _epochs(out)] == [5]  # 40 images / batch 8
    assert json.loads((out / "metrics.json").read_text())["test_images"] == 32
