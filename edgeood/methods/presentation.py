"""How a method is shown, kept apart from its maths: the CLI's method row and detail table,
the size report's constant scopes, the docs' catalogue row and what the demo runs.

A method writes its own as a nested class in its file,

    class Presentation(presentation.Presentation):
        score = "max_c logits_c"
        def summary(self, entry): ...

and presentation(name) gives it bound to the method class (a method without one gets this
default: the tuner's choice as summary, the first line of its docstring as score).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoVariant:
    """One more row of the digits demo: the method exported again with `params`, on the
    shipped model (`model` "") or its layer-energy-regularised fine-tune ("regularised")."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = ""


class Presentation:
    """The default presentation; `self.method` is the method class."""

    score = ""          # the score in one line (docs catalogue); "" = the class docstring's
    fits = ""           # what calibration fits (docs); "" = "-" or "statistics on ID images"
    notes = ""          # notes and cost (docs)
    demo = True         # exported in the digits demo
    demo_params: dict[str, Any] = {}  # its parameters there
    lite0 = False       # exported in the EfficientNet-Lite0 demo

    def __init__(self, method: type):
        self.method = method

    # --- the CLI --------------------------------------------------------------------------
    def summary(self, entry: dict[str, Any]) -> str:
        """One short phrase for the CLI's method table, from the metadata entry."""
        tuning = entry.get("tuning")
        if tuning:
            chosen = ", ".join(f"{k} {tuning[k]:g}" for k in self.method.tune_space
                               if k in tuning)
            return f"{chosen} ({tuning['against']} AUROC {tuning['auroc']:.3f})"
        return ""

    def detail_table(self, entry: dict[str, Any]) -> tuple[str, list[str], list[list]] | None:
        """An optional (title, columns, rows) table the CLI prints below the method table."""
        return None

    def constant_scopes(self, entry: dict[str, Any]) -> tuple[str, ...]:
        """Name prefixes of this method's constants in the graph (for size reports)."""
        return (f"{self.method.name}/",)

    # --- the docs' catalogue ----------------------------------------------------------------
    def row(self) -> dict[str, str]:
        """The catalogue row: method, score, fits, notes (each one line)."""
        doc = (self.method.__doc__ or "").strip().splitlines()
        score = self.score or (doc[0].strip() if doc else "")
        fits = self.fits or ("statistics on ID images" if self.method.needs_fit else "-")
        return {"method": self.method.name, "score": _one_line(score), "fits": _one_line(fits),
                "notes": _one_line(self.notes)}

    # --- the demo ---------------------------------------------------------------------------
    def demo_variants(self, entry: dict[str, Any]) -> list[DemoVariant]:
        """Extra digits demo rows, from the method's entry in the main digits detector."""
        return []

    def lite0_report(self, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """What the EfficientNet-Lite0 demo echoes after the export ("" for nothing) and adds
        to its result, from the method's entry."""
        return "", {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def presentation(method) -> Presentation:
    """The presentation of a method (a name or a class)."""
    if isinstance(method, str):
        from edgeood.methods.registry import method_class
        method = method_class(method)
    return getattr(method, "Presentation", Presentation)(method)
