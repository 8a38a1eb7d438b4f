"""The evaluation protocols (finetune, linprobe, knn): where the encoder comes from, labeled data,
frozen features, metrics and the outputs every evaluation writes."""
