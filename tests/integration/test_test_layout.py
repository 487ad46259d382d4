"""The test suite's own layout: every test module sits in the folder of the layer it tests (a
package, so basenames may repeat across layers), and no test module (nor tests/helpers, nor
conftest.py) imports a test module or conftest.py: code two of them share lives in tests/helpers,
fixtures in tests/conftest.py."""
from __future__ import annotations

import ast

from tests.helpers import TESTS

LAYERS = {"graph", "methods", "runtime", "tensorrt", "deploy", "cli", "integration", "gpu",
          "stats"}


def _test_modules():
    return sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)


def _imported(tree: ast.AST) -> set[str]:
    """Every dotted name an import statement in the module refers to (at any depth; for
    `from a.b import c` both a.b and a.b.c, since c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{a.name}" if base.strip(".") else f"{base}{a.name}"
                         for a in node.names)
    return names


def _is_test_code(dotted: str) -> bool:
    parts = [p for p in dotted.split(".") if p]
    return bool(parts) and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def test_no_test_module_imports_another_test_module():
    found = _test_modules()
    assert len(found) > 30, f"only {len(found)} test modules under {TESTS}"
    shared = sorted((TESTS / "helpers").rglob("*.py")) + sorted(TESTS.glob("conftest.py"))
    offenders = []
    for path in found + shared:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bad = sorted(n for n in _imported(tree) if _is_test_code(n))
        if bad:
            offenders.append(f"{path.relative_to(TESTS)}: {', '.join(bad)}")
    assert not offenders, ("test modules import test modules (move the shared code to "
                           "tests/helpers, fixtures to tests/conftest.py): " + "; ".join(offenders))


def test_every_test_module_sits_in_a_layer_folder():
    misplaced = [str(p.relative_to(TESTS)) for p in _test_modules()
                 if len(p.relative_to(TESTS).parts) != 2 or p.parent.name not in LAYERS]
    assert not misplaced, f"test modules outside tests/<layer>/ ({sorted(LAYERS)}): {misplaced}"
    not_packages = sorted(layer for layer in LAYERS | {"helpers"}
                          if not (TESTS / layer / "__init__.py").is_file())
    assert not not_packages, f"folders without __init__.py: {not_packages}"
