#!/usr/bin/env python
"""``python -m studies.relational``: plan, train and record the relational study, and render its report.

The real study (about 27 runs; ``--dry-run`` gives the estimate)::

    python -m studies.relational --dry-run --list
    python -m studies.relational                      # resumable: the same command continues it

A tiny smoke run of the whole pipeline: ``python -m studies.relational --quick --image-size 16``.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
