"""``python -m sklearn_ergo demo | denoise | train`` (see :mod:`._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
