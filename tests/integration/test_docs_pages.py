"""Every CLI command and every registered method has its documentation page.

The CLI reference (docs/reference/cli.md) is generated from the typer app by mkdocs-typer2, which
runs typer's own docs generator: the test runs that generator and checks that it covers every
command, deploy subcommands included, and that the page still holds the directive. Methods: one
page each under docs/methods/ (variants that share a page are mapped below), listed in the nav
of mkdocs.yml, so a new method without a page fails here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer.main

from tests.helpers import REPO

DOCS = REPO / "docs"
MKDOCS = REPO / "mkdocs.yml"
# methods documented on a shared page; every other method has docs/methods/<name>.md
SHARED_PAGES = {"adascale_a": "adascale.md", "adascale_l": "adascale.md",
                "weiper_msp": "weiper.md", "weiper_kld": "weiper.md"}


def registered_methods() -> list[str]:
    import edgeood.methods as methods
    if callable(getattr(methods, "registry", None)):
        return sorted(methods.registry())
    from edgeood.methods.registry import REGISTRY
    return sorted(REGISTRY)


def command_paths() -> list[str]:
    """'edgeood export', ..., 'edgeood deploy triton': every command of the typer app."""
    from edgeood.cli.app import app
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None) or {}
        if path != "edgeood" and not subs:
            out.append(path)
        for name, sub in subs.items():
            if not getattr(sub, "hidden", False):
                walk(sub, f"{path} {name}")
    walk(typer.main.get_command(app), "edgeood")
    return out


def nav_pages() -> set[str]:
    return set(re.findall(r"([\w./-]+\.md)", MKDOCS.read_text(encoding="utf-8")))


def test_cli_reference_is_generated_from_the_app():
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert re.search(r":::\s*mkdocs-typer2", page) and ":module: edgeood.cli.app" in page
    assert "reference/cli.md" in nav_pages()


def test_every_cli_command_is_in_the_reference():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-m", "typer", "edgeood.cli.app", "utils", "docs",
                           "--name", "edgeood"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    headings = set(re.findall(r"^#+ `([^`]+)`", proc.stdout, re.M))
    paths = command_paths()
    assert {"edgeood export", "edgeood deploy triton", "edgeood deploy deepstream"} <= set(paths)
    missing = [p for p in paths if p not in headings]
    assert not missing, f"commands missing from the generated CLI reference: {missing}"


@pytest.mark.parametrize("method", registered_methods())
def test_every_method_has_a_page(method):
    page = DOCS / "methods" / SHARED_PAGES.get(method, f"{method}.md")
    assert page.is_file(), (f"method {method!r} has no page: add {page.relative_to(REPO)} "
                            "(formula, fit, hyperparameters, cost, deviations) and list it in "
                            "the nav of mkdocs.yml")
    text = page.read_text(encoding="utf-8")
    assert method in text, f"{page.relative_to(REPO)} never names {method}"
    assert f"methods/{page.name}" in nav_pages(), f"{page.name} is not in mkdocs.yml's nav"
    assert method in (DOCS / "methods" / "index.md").read_text(encoding="utf-8"), \
        f"{method} is missing from the 'Which method?' page"


def test_no_method_page_without_a_method():
    known = set(registered_methods())
    for page in (DOCS / "methods").glob("*.md"):
        if page.name == "index.md":
            continue
        names = [m for m, p in SHARED_PAGES.items() if p == page.name] or [page.stem]
        assert any(n in known for n in names), f"{page.name} documents no registered method"


def test_no_pointer_to_documents_outside_the_repository():
    outside = ("DESIGN" + ".md", "methods" + ".md")
    roots = ["edgeood", "tests", "benchmarks", "samples", "docs", "README.md"]
    hits = []
    for root in roots:
        base = REPO / root
        for path in ([base] if base.is_file() else base.rglob("*")):
            if path.suffix not in (".py", ".md", ".toml", ".txt") or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            hits += [f"{path.relative_to(REPO)}: {name}" for name in outside
                     if re.search(rf"(?<![\w/]){re.escape(name)}", text)]
    assert not hits, hits
