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


def methods_help(C: int = 1000, D: int = 1280) -> str:
    """`edgeood export --methods`'s help: every registered method with what its head costs
    (graph nodes, and the formula of its large constants in C classes and D features)."""
    listed = []
    for name, cls in registry().items():
        cost = presentation(cls).cost(C, D)
        listed.append(f"{name}{'*' if cls.by_default else ''}" + (f" ({cost})" if cost else ""))
    return ("Comma-separated methods (* = the default set). Available, with what each head "
            f"costs: {'; '.join(listed)}.")
