"""``python -m rkd_pml``: the ``rkd-pml`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
