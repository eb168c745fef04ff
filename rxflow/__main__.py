"""``python -m rxflow``: the command-line runner (see :mod:`rxflow.flow.cli`)."""

import sys

from rxflow.flow.cli import main

if __name__ == "__main__":
    sys.exit(main())
