"""``python -m spnkit``: the ``spnkit`` command."""

import sys

from spnkit.cli import main

sys.exit(main())
