"""Code the test modules share (no test module imports another test module: what two of them
need lives here, fixtures live in tests/conftest.py). Paths here do not depend on where a test
module sits under tests/."""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]  # tests/
DATA = TESTS / "data"                         # tests/data (the legacy golden detectors)
REPO = TESTS.parent                           # the repository root (README.md, samples/, ...)
