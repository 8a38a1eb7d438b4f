"""Anomaly detection with a pre-trained MAE: ``maelab anomaly``.

Train on normal images only, then score new images two ways: by how badly the MAE reconstructs them
(:mod:`maelab.anomaly.scoring`: complementary masks hide every patch once per group, each patch's error in the
model's own target space, reduced to an image score), and by the kNN distance of their embedding to the normal
training images. :mod:`maelab.anomaly.metrics` computes AUROC / AUPRC when the labels say which images are
anomalous; :mod:`maelab.anomaly.figures` draws the heat maps and the ROC curves.
"""
