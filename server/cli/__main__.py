"""``python -m server.cli``: the same as the ``smsgw`` command."""

import sys

from server.cli import main

sys.exit(main())
