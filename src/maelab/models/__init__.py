"""MAE architectures and the preset registry."""

from maelab.models.mae import MAEConfig, MAEOutput, MaskedAutoencoder
from maelab.models.registry import create_model, get_config, list_models

__all__ = ["MAEConfig", "MAEOutput", "MaskedAutoencoder", "create_model", "get_config", "list_models"]
