"""The demo's anomaly view: the same score and patch errors as ``maelab anomaly``, a heat map, a reference."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from maelab.anomaly.scoring import complementary_masks, image_scores, patch_errors
from maelab.cli import main
from maelab.data import DataConfig, build_dataset, eval_transform
from maelab.demo.anomaly_view import describe, reference_images, run_anomaly_view
from maelab.demo.app import load_demo_model
from maelab.demo.pipeline import load_upload
from maelab.visualize.reconstruct import load_mae


@pytest.fixture(scope="module")
def served(demo_run):
    model, info, extra = load_mae(demo_run)
    return model, info, extra


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_score_and_map_are_those_of_the_anomaly_scoring(served):
    model, info, extra = served
    image = load_upload(_png(0), info)
    result = run_anomaly_view(model, info, image, masks=4, seed=3, score="top", top_fraction=0.25)
    groups = complementary_masks(model.config.num_patches, 4, torch.Generator().manual_seed(3))
    errors = patch_errors(model, image.unsqueeze(0), groups)  # (1, 16)
    assert result.patch_errors.shape == (4, 4)
    np.testing.assert_allclose(result.patch_errors.ravel(), errors[0].numpy(), rtol=1e-6)
    assert result.score == pytest.approx(float(image_scores(errors, "top", 0.25)[0]), rel=1e-6)
    assert result.heatmap.shape == result.original.shape == (224, 224, 3)  # 32 px enlarged 7x
    assert result.reference_scores is None and result.percentile is None
    again = run_anomaly_view(model, info, image, masks=4, seed=3, score="top", top_fraction=0.25)
    assert again.score == result.score and np.array_equal(again.heatmap, result.heatmap)
    other = run_anomaly_view(model, info, image, masks=4, seed=4, score="max")
    assert other.score == pytest.approx(float(other.patch_errors.max()))


def test_reference_images_are_held_out_images_of_the_run(served):
    model, info, extra = served
    reference = reference_images(info, extra, count=10)
    test = build_dataset(DataConfig(dataset="synthetic", synthetic_size=64), "test", eval_transform(info))
    assert reference.shape == (10, 1, 32, 32) and torch.equal(reference[3], test[3][0])
    result = run_anomaly_view(model, info, reference[0], reference=reference)
    assert result.reference_scores.shape == (10,)
    assert result.percentile == pytest.approx(100 * np.mean(result.reference_scores < result.score))
    assert result.scale >= result.patch_errors.max()
    text = describe(result, 4, 0, "top", 0.1, model.config.target, "held-out images")
    assert "Anomaly score" in text and "of 10 held-out images" in text and "--masks 4 --seed 0 --score top" in text
    with pytest.raises(ValueError, match="records no training data"):
        reference_images(info, {})


def test_page_model_carries_the_reference(demo_run):
    served = load_demo_model(demo_run)
    assert served.reference is not None and served.reference.shape[0] == 16  # the whole 16-image test split
    assert "held-out images of the run's data (the first of its synthetic test split)" in served.reference_note


def test_the_page_agrees_with_maelab_anomaly(demo_run, served, tmp_path):
    """Test image #5 on the page scores what ``maelab anomaly`` writes for it, patch by patch."""
    model, info, extra = served
    out = tmp_path / "scores"
    assert main(["anomaly", str(demo_run), "--no-knn", "--num-maps", "0", "--masks", "3", "--seed", "2",
                 "--output-dir", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO((out / "scores.csv").read_text())))
    test = build_dataset(DataConfig(dataset="synthetic", synthetic_size=64), "test", eval_transform(info))
    result = run_anomaly_view(model, info, test[5][0], masks=3, seed=2)
    assert result.score == pytest.approx(float(rows[5]["recon_score"]), rel=1e-5)
    written = load_file(out / "patch_errors.safetensors")["errors"][5]  # (4, 4)
    np.testing.assert_allclose(result.patch_errors, written.numpy(), rtol=1e-5, atol=1e-7)


def test_too_many_masks_is_a_clear_error(served):
    model, info, _ = served
    with pytest.raises(ValueError, match="--masks must be between 2 and the 16 patches"):
        run_anomaly_view(model, info, torch.zeros(1, 32, 32), masks=17)
