"""The CLI as a user runs it: a subprocess, real exit codes and stderr (shared by tests/cli,
tests/methods, tests/deploy and tests/graph)."""
from __future__ import annotations

import subprocess
import sys


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgeood {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc
