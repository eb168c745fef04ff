"""``python -m rxflow``: the command-line runner (see :mod:`rxflow.cli`)."""

import sys

from rxflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
