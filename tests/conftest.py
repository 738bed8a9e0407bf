"""Shared test setup.

The repository root goes on ``sys.path`` so that tests anywhere under ``tests/`` can import the
shared helpers as ``tests.certs`` (the project package itself is installed editable).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
