"""maelab: Masked Autoencoders (He et al. 2021) for pre-training Vision Transformers."""

__version__ = "0.1.0"
