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
    # the cost of its head (`edgeood export --help`): graph nodes under its name scope (an int,
    # or a phrase where it depends on the model), and the bytes of the constants that grow
    # with the model: a formula of C (classes), D (features) and its parameters; `example`
    # gives the parameters for the size quoted at C=1000, D=1280 (an ImageNet head)
    head_nodes: int | str = ""
    shared_nodes = 0    # more nodes under a scope shared with sibling methods
    constant_bytes = ""
    constant_example: dict[str, float] = {}
    cost_note = ""      # what a formula's other letters are
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

    def cost(self, C: int = 1000, D: int = 1280) -> str:
        """Head nodes and the formula of its large constants, e.g. for the export --help."""
        parts = []
        if self.head_nodes != "":
            n = self.head_nodes
            parts.append(f"{n} node{'s' if n != 1 else ''}" if isinstance(n, int) else
                         f"{n} nodes" if is_formula(n) else str(n))
            if self.shared_nodes:
                parts[-1] += f" + {self.shared_nodes} shared"
        if self.constant_bytes:
            text = f"{self.constant_bytes} bytes"
            if self.constant_example:
                size = evaluate_bytes(self.constant_bytes, C=C, D=D, **self.constant_example)
                at = {**({"C": C, "D": D} if "C" in self.constant_bytes or "D" in
                         self.constant_bytes else {}), **self.constant_example}
                text += f" ({human_bytes(size)} at {', '.join(f'{k}={v:g}' for k, v in at.items())})"
            parts.append(text)
        if self.cost_note:
            parts.append(self.cost_note)
        return "; ".join(parts)

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


def evaluate_bytes(formula: str, **values: float) -> float:
    """A cost formula (numbers, names, + - * / and parentheses) at the given values."""
    import ast
    tree = ast.parse(formula, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Name,
               ast.Load, ast.Constant)
    if not all(isinstance(node, allowed) for node in ast.walk(tree)):
        raise ValueError(f"cost formula {formula!r}: only + - * / of names and numbers")
    return float(eval(compile(tree, "<cost>", "eval"), {"__builtins__": {}}, dict(values)))


def is_formula(text: str) -> bool:
    try:
        evaluate_bytes(text, **{k: 1 for k in "CDmrNQ"})
    except (ValueError, SyntaxError, NameError):
        return False
    return True


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def presentation(method) -> Presentation:
    """The presentation of a method (a name or a class)."""
    if isinstance(method, str):
        from edgeood.methods.registry import method_class
        method = method_class(method)
    return getattr(method, "Presentation", Presentation)(method)
