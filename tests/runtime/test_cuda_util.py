"""cuda-python here, for real: the runtime module loads without a GPU, every call's status goes
through one check, the typings/ stubs that mypy checks the TensorRT backend against match the
installed module's own signatures, and the older cuda.cudart is the fallback."""
from __future__ import annotations

import ast
import re
import types

import pytest

from edgeood.errors import EdgeoodError
from edgeood.runtime.tensorrt import cuda as cuda_util
from tests.helpers import REPO

STUB = REPO / "typings" / "cuda" / "bindings" / "runtime.pyi"
runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
# calls that need no GPU: their results are counted by calling them
CALLABLE_HERE = {"cudaGetErrorName": ["err"], "cudaGetErrorString": ["err"],
                 "cudaGetDeviceCount": [], "cudaRuntimeGetVersion": [],
                 "cudaDriverGetVersion": []}


def _stub_functions() -> dict[str, tuple[list[str], int]]:
    """name -> (parameter names, number of values returned) from the stub."""
    out = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            params = [a.arg for a in node.args.args]
            ret = node.returns
            n = len(ret.slice.elts) if isinstance(ret, ast.Subscript) and isinstance(
                ret.slice, ast.Tuple) else 1
            out[node.name] = (params, n)
    return out


def test_stub_matches_the_installed_module():
    """Each stubbed function exists, takes the parameters its docstring names (in order), and
    returns the error code plus as many values as the docstring's Returns section lists."""
    funcs = _stub_functions()
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamSynchronize",
            "cudaGraphInstantiateWithFlags"} <= set(funcs)
    for name, (params, n_ret) in funcs.items():
        fn = getattr(runtime, name)
        doc = fn.__doc__ or ""
        sig = doc.strip().splitlines()[0]
        m = re.match(rf"{name}\((.*)\)", sig)
        assert m, (name, sig)
        names = [p.split(":")[0].split()[-1] for p in m.group(1).split(",") if p.strip()]
        assert names == params, (name, names, params)
        if name in CALLABLE_HERE:  # their docstrings list no names: call them instead
            continue
        returns = doc.split("Returns\n", 1)[1].split("See Also", 1)[0]
        listed = re.findall(r"^\s*(\w+) : ", returns, re.M)
        assert 1 + len(listed) == n_ret, (name, listed, n_ret)
    err = runtime.cudaError_t.cudaErrorInvalidValue
    for name, args in CALLABLE_HERE.items():
        result = getattr(runtime, name)(*[err if a == "err" else a for a in args])
        assert isinstance(result, tuple) and len(result) == funcs[name][1], name


def test_stub_types_exist():
    for cls in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode", "cudaStream_t",
                "cudaGraph_t", "cudaGraphExec_t", "cudaDeviceProp"):
        assert hasattr(runtime, cls), cls
    assert runtime.cudaMemcpyKind.cudaMemcpyHostToDevice == 1
    assert isinstance(runtime.cudaStreamNonBlocking, int)


def test_every_status_goes_through_check():
    assert cuda_util.check((runtime.cudaError_t.cudaSuccess, 7), "x") == 7
    assert cuda_util.check((runtime.cudaError_t.cudaSuccess,), "x") is None
    with pytest.raises(cuda_util.CudaError) as e:
        cuda_util.check((runtime.cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc")
    assert str(e.value) == ("CUDA call cudaMalloc failed: cudaErrorMemoryAllocation "
                            "(out of memory)")
    assert isinstance(e.value, EdgeoodError)  # the CLI prints it as one line


def test_gpu_info_here():
    """Without a GPU (or driver) the real runtime's own error comes back, named."""
    try:
        info = cuda_util.gpu_info()
    except cuda_util.CudaError as e:
        assert "cudaGetDeviceCount" in str(e) and "cudaError" in str(e)
        return
    assert info.name and re.fullmatch(r"\d+\.\d+", info.compute_capability)


def test_lazy_runtime_falls_back_to_cuda_cudart(monkeypatch):
    fake = types.ModuleType("cuda.cudart")
    fake.cudaMalloc = lambda n: (0, 1234)
    monkeypatch.setitem(__import__("sys").modules, "cuda.cudart", fake)
    lazy = cuda_util._LazyRuntime(("cuda.no_such_runtime", "cuda.cudart"))
    assert lazy.load() is fake and lazy.cudaMalloc(4) == (0, 1234)
    none = cuda_util._LazyRuntime(("cuda.no_such_runtime",))
    with pytest.raises(EdgeoodError, match="needs cuda-python"):
        none.load()
