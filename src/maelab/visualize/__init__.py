"""Pictures: reconstruction grids and loss curves, and the ``maelab reconstruct`` command."""
