"""The CLI as a user runs it: a subprocess, real exit codes and stderr (shared by tests/cli,
tests/methods, tests/deploy and tests/graph)."""
from __future__ import annotations

import re
import subprocess
import sys

# the line a finished stage prints when stderr is not a terminal ("export: fit ... done in 3.1 s")
PROGRESS_LINE = re.compile(r"(export|calibrate): \w+ \.\.\. done in \d+\.\d s")


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "edgeood.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgeood {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc
