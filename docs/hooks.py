"""MkDocs hook: fill the generated markers of every page (see docs/gen_benchmarks.py)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# the checkout's edgeood (CLI reference, method table), also where another copy is installed
_REPO = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, _REPO)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)

_spec = importlib.util.spec_from_file_location("gen_benchmarks",
                                               Path(__file__).with_name("gen_benchmarks.py"))
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def on_page_markdown(markdown, page, config, files):
    return gen.render(markdown)
