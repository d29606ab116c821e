"""Sampler tests: make the toy helpers (``sampler_toys``) importable.

The project runs pytest with ``--import-mode=importlib``, which does not put test directories on
``sys.path``; this directory is appended (not prepended, so it can shadow nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
