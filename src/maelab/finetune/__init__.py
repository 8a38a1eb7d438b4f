"""``maelab finetune``: end-to-end, partial or from-scratch fine-tuning of a pre-trained encoder."""
