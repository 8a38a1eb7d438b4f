"""Interoperability: import the official MAE releases and Hugging Face directories, export to
timm, Hugging Face, ONNX and plain safetensors.

Entry points::

    from maelab.interop import load_source
    imported = load_source("mae_visualize_vit_large.pth")   # or a maelab checkpoint / HF directory
    model = imported.build()                                  # a MaskedAutoencoder (needs the decoder)

The command line wraps them as ``maelab export`` and ``maelab reconstruct``.
"""

from maelab.interop.imported import IMAGENET_MEAN, IMAGENET_STD, ImportedModel
from maelab.interop.load import load_source

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImportedModel", "load_source"]
