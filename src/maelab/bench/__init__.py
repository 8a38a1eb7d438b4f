"""``maelab bench``: throughput, FLOPs, MFU and memory of pre-training, and the data loader's speed."""
