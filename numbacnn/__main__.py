"""``python -m numbacnn``: the same as the ``numbacnn`` command."""

import sys

from numbacnn.cli import main

sys.exit(main())
