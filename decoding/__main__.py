"""``python -m decoding``: see :mod:`decoding.cli`."""

from __future__ import annotations

import sys

from decoding.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
