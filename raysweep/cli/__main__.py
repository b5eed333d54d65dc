"""``python -m raysweep.cli``: the same as the ``raysweep`` command."""

import sys

from raysweep.cli import main

sys.exit(main())
