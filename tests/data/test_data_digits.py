"""scikit-learn's bundled handwritten digits as --dataset digits: a fixed split, real pixels, clear errors."""

import gzip

import numpy as np
import pytest
import torch

from maelab.data import DataConfig, build_dataset, dataset_info, digits
from maelab.data.config import DatasetNotFoundError

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _raw(split):
    return digits.load_split(digits.locate(DataConfig(dataset="digits")), split)


def test_split_is_fixed_disjoint_and_covers_every_image():
    (train, train_labels), (test, test_labels) = _raw("train"), _raw("test")
    assert train.shape == (1297, 8, 8) and test.shape == (500, 8, 8) and train.dtype == torch.uint8
    reference = sklearn_datasets.load_digits()
    expected = np.rint(reference.images * 255 / 16).astype(np.uint8)
    # Every image lands in exactly one split, with its own label.
    both = torch.cat([train, test]).reshape(1797, -1).numpy()
    labels = torch.cat([train_labels, test_labels]).numpy()
    order = np.lexsort(np.c_[both, labels].T[::-1])
    ref_order = np.lexsort(np.c_[expected.reshape(1797, -1), reference.target].T[::-1])
    assert np.array_equal(both[order], expected.reshape(1797, -1)[ref_order])
    assert np.array_equal(labels[order], reference.target[ref_order])
    assert set(test_labels.tolist()) == set(range(10))
    assert torch.equal(_raw("test")[0], test)  # the same split on every call


def test_stats_are_the_training_split_stats():
    pixels = _raw("train")[0].float() / 255
    assert round(pixels.mean().item(), 4) == digits.MEAN[0]
    assert round(pixels.std().item(), 4) == digits.STD[0]


def test_dataset_resizes_to_the_model_and_reads_a_local_copy(tmp_path):
    info = dataset_info(DataConfig(dataset="digits", img_size=28))
    assert (info.channels, info.img_size, info.num_classes) == (1, (28, 28), 10)
    data = build_dataset(DataConfig(dataset="digits", img_size=28), "test", None)
    image, label = data[0]
    assert image.shape == (1, 28, 28) and 0 <= label < 10 and len(data) == 500
    copy = tmp_path / "digits.csv"
    copy.write_bytes(gzip.decompress(digits.locate(DataConfig(dataset="digits")).read_bytes()))
    local = build_dataset(DataConfig(dataset="digits", data=copy, img_size=28), "test", None)
    assert torch.equal(local[0][0], image) and local[0][1] == label


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not a file"):
        digits.locate(DataConfig(dataset="digits", data=tmp_path))
    short = tmp_path / "short.csv"
    short.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="65 columns"):
        digits.load_split(short, "train")
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["99"] * 64 + ["3"]) + "\n")
    with pytest.raises(ValueError, match="0..16"):
        digits.load_split(bad, "train")
