"""``maelab pretrain``: its config and the MAE pre-training step on the shared loop."""
