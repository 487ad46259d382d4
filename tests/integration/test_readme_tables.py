"""The README's measured tables are the ones generated from benchmarks/results/*.json (no
figure typed by hand): the Triton streams table equals what the docs generator renders."""
from __future__ import annotations

import importlib.util

from tests.helpers import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("gen_benchmarks",
                                                  REPO / "docs" / "gen_benchmarks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen


def test_readme_triton_table_is_generated_from_the_results_file():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- triton-table:start -->", "<!-- triton-table:end -->"
    in_readme = text.split(start, 1)[1].split(end, 1)[0].strip("\n")
    assert in_readme == _generator().triton_table().split("\n\n")[0]
