"""The docs' method table, generated from the registry (each method's Presentation row)."""
from __future__ import annotations

from edgeood.methods.presentation import presentation
from edgeood.methods.registry import registry

COLUMNS = {"method": "method", "score": "score (higher = ID)", "fits": "fitted on ID data",
           "notes": "notes"}


def method_rows() -> list[dict[str, str]]:
    """One row per registered method, in listing order."""
    return [presentation(cls).row() for cls in registry().values()]


def method_table() -> str:
    """The Markdown table: method, score in one line, what it fits, notes / cost."""
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for row in method_rows():
        cells = [f"`{row['method']}`", row["score"], row["fits"], row["notes"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
