"""MAE and SimMIM architectures and the preset registry."""

from maelab.models.config import MAEConfig
from maelab.models.mae import MAEOutput, MaskedAutoencoder
from maelab.models.registry import build_model, create_model, get_config, list_models, weights_mismatch
from maelab.models.simmim import SimMIM

__all__ = [
    "MAEConfig", "MAEOutput", "MaskedAutoencoder", "SimMIM", "build_model", "create_model", "get_config", "list_models",
    "weights_mismatch",
]
