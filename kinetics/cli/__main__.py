"""``python -m kinetics.cli``: the ``kinetics`` command."""

import sys

from kinetics.cli import main

sys.exit(main())
