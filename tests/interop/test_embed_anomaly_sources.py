"""embed and anomaly read official MAE releases too (built in memory, no downloads)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import torch

from maelab.cli import main
from maelab.data import DataConfig, build_dataset, dataset_info, eval_transform
from maelab.evaluate.embed import read_matrix
from maelab.interop import load_source

# The cls token of the last block: the features' default before the validated one (avg over all blocks),
# which this file's assertions were written for.
CLS = ["--pool", "token", "--layers", "1"]


def test_embed_an_official_encoder_only_release(official_files, tmp_path):
    out = tmp_path / "official.npy"
    assert main(["embed", str(official_files["encoder"]), *CLS, "--dataset", "synthetic", "--synthetic-size", "16",
                 "--split", "test", "-o", str(out)]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["source_checkpoint"] == str(official_files["encoder"]) and summary["rows"] == 4
    data = DataConfig(dataset="synthetic", synthetic_size=16, img_size=16, channels=3)
    info = dataclasses.replace(dataset_info(data), mean=tuple(summary["mean"]), std=tuple(summary["std"]))
    test = build_dataset(data, "test", eval_transform(info))
    imgs = torch.stack([test[i][0] for i in range(len(test))])
    model = load_source(official_files["encoder"]).build(require_decoder=False)
    with torch.no_grad():
        expected = model.forward_encoder(imgs, None)[:, 0]  # (4, 128) the cls token, every patch visible
    torch.testing.assert_close(read_matrix(out), expected, atol=1e-5, rtol=1e-5)


def test_anomaly_with_an_official_release_and_no_training_data(official_files, tmp_path, caplog):
    out = tmp_path / "anomaly"
    assert main(["anomaly", str(official_files["visualize"]), "--dataset", "synthetic", "--synthetic-size", "32",
                 "--normal-class", "1", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "anomaly.json").read_text())
    assert summary["knn"] is None and set(summary["metrics"]) == {"recon"} and summary["target"] == "pixel"
    assert any("no kNN score" in r.message for r in caplog.records)
    rows = list(csv.DictReader(io.StringIO((out / "scores.csv").read_text())))
    assert len(rows) == 8 and {r["knn_score"] for r in rows} == {""}
