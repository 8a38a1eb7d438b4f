"""``python -m maelab`` is the same as the ``maelab`` command."""

import sys

from maelab.cli import main

sys.exit(main())
