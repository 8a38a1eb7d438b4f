"""``maelab demo``: reconstructions of your own images in the browser (needs the ``demo`` extra)."""
