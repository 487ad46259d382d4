"""The architecture holds: imports point down the layers, no module imports itself back through
a circle, and `import edgeood` stays cheap (no onnxruntime, torch or method modules until used).

Layers, top to bottom (LAYERS below; a module may import its own layer and any lower one,
lazy imports inside functions included):
    the edgeood package itself (lazy re-exports)
    cli                         parsing and printing
    zoo                         the embedded defaults and the demo (drive the API)
    api, config                 the Python API over one typed config per command
    pipeline, tools, deploy     export/calibrate stages; eval/profile/watch/inspect; serving files
    tensorrt (builder)          the engine builder (reads engines back through the runtime)
    methods, runtime            scoring methods; backends and the Detector facade
    graph, tensorrt check/rewrite   ONNX surgery (the TensorRT rewrites are graph surgery)
    data, stats                 image sources; the test martingale and metrics
    artifact, resize, progress, train   file formats; resize rules; logging; training helpers
    errors, version
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "edgeood"
# module prefix -> (layer, rank); the longest prefix decides, a layer may import itself
LAYERS = {
    "edgeood": ("package", 10),
    "edgeood.cli": ("cli", 9),
    "edgeood.zoo": ("zoo", 8),
    "edgeood.api": ("api", 7), "edgeood.config": ("api", 7),
    "edgeood.pipeline": ("pipeline", 6), "edgeood.tools": ("tools", 6),
    "edgeood.deploy": ("deploy", 6),
    "edgeood.tensorrt": ("tensorrt build", 5),
    "edgeood.methods": ("methods", 4), "edgeood.runtime": ("runtime", 4),
    "edgeood.graph": ("graph", 3), "edgeood.tensorrt.check": ("tensorrt graph", 3),
    "edgeood.tensorrt.rewrite": ("tensorrt graph", 3),
    "edgeood.data": ("data", 2), "edgeood.stats": ("stats", 2),
    "edgeood.artifact": ("artifact", 1), "edgeood.resize": ("resize", 1),
    "edgeood.progress": ("progress", 1), "edgeood.train": ("train", 1),
    "edgeood.errors": ("errors", 0), "edgeood.version": ("version", 0),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every edgeood module the file imports, at module level or inside functions (imports
    under `if TYPE_CHECKING:` run only in the type checker and are left out)."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgeood")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("edgeood"):
            for alias in node.names:  # `from edgeood.x import y`: y may be a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def layer(name: str) -> tuple[str, int]:
    """(layer, rank) of a module: its longest prefix in LAYERS."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{name} is on no layer: add it to LAYERS in this test")


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down():
    upward = []
    for mod, targets in import_graph().items():
        unit, rank = layer(mod)
        for target in targets:
            t_unit, t_rank = layer(target)
            if t_unit != unit and not t_rank < rank:
                upward.append(f"{mod} (layer {unit}) imports {target} (layer {t_unit})")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    """No strongly connected set of modules (Tarjan), lazy imports included; a package's
    __init__ importing its own submodules counts too."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                circles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_import_edgeood_is_cheap():
    """`import edgeood` loads neither onnxruntime, onnx, torch nor a method module, and takes
    under 0.3 s (best of 5 fresh interpreters, minus the interpreter's own start-up)."""
    code = ("import sys, time; t = time.perf_counter(); import edgeood; "
            "d = time.perf_counter() - t; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnxruntime', 'onnx', 'torch', 'onnx_graphsurgeon', 'numpy') "
            "or m.startswith('edgeood.methods')); print(d); print(','.join(heavy))")
    times = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=REPO).stdout.splitlines()
        times.append(float(out[0]))
        heavy = out[1] if len(out) > 1 else ""
        assert heavy == "", f"import edgeood imported {heavy}"
    assert min(times) < 0.3, f"import edgeood took {min(times):.3f} s (best of 5)"


def test_public_names_resolve_lazily():
    code = ("import sys, edgeood; assert 'edgeood.api' not in sys.modules; "
            "f = edgeood.export; assert callable(f) and 'edgeood.api' in sys.modules; "
            "assert callable(edgeood.calibrate) and callable(edgeood.load); "
            "assert edgeood.StreamMonitor.__name__ == 'StreamMonitor'; "
            "import edgeood.pipeline.calibrate; assert callable(edgeood.calibrate)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_package_is_valid_python_3_10():
    """JetPack 6 runs Python 3.10: no module may need a newer Python (vermin reads the syntax,
    the standard-library modules and functions every file uses)."""
    pytest.importorskip("vermin", reason="vermin (test extra) checks the minimum Python version")
    args = ["-t=3.10-", "--no-tips", "--violations", "--eval-annotations",
            "--no-parse-comments", str(PACKAGE)]
    proc = subprocess.run([sys.executable, "-c", "import sys; from vermin import main; "
                           "sys.argv[1:] = " + repr(args) + "; sys.exit(main())"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stream_monitor_needs_numpy_only():
    """The stream monitor (and the typed metadata it reads) runs inside a Triton Python-backend
    model whose environment has NumPy and ONNX Runtime but no onnx."""
    code = ("import sys; sys.modules['onnx'] = None; "
            "from edgeood.stats.monitor import StreamMonitor; "
            "from edgeood.artifact.metadata import DetectorMetadata")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_package_is_installed():
    """pyproject.toml lists the packages by hand (export_recipes is mapped into edgeood): every
    folder of edgeood with an __init__.py must be in that list, or a pip install lacks it."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
