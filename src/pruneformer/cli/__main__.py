"""``python -m pruneformer.cli`` (what ``torchrun`` and ``accelerate launch`` run)."""

import sys

from . import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
