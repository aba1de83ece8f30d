"""Shared test configuration: the source roots on sys.path for runs without an install."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# tests/ itself too, for the helpers the tiers share (waiting.py).
for root in ("tests", "operator", "images/trainer", "images/server"):
    path = str(ROOT / root)
    if path not in sys.path:
        sys.path.insert(0, path)
