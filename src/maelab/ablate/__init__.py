"""``maelab ablate``: sweeps of pre-training variants, each cell pre-trained and evaluated, and their reports."""
