#!/usr/bin/env bash
# A real Triton Inference Server for tests/deploy/test_triton_server.py: the nvidia-pytriton
# wheel ships tritonserver (with its libraries and the Python backend) and Python-backend stubs.
# The server gets its own virtual environment (.venv-triton/): the stub runs with the Python on
# the server's PATH, and that environment needs numpy < 2 (with numpy 2 the Python backend's
# outputs fail "output tensor shape does not match size of output").
#   .ci/triton-setup.sh [VENV_DIR]    (default .venv-triton; PYTHON=python3.11 picks the Python)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-triton}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps --no-warn-conflicts "nvidia-pytriton==0.7.0"
"$VENV/bin/python" -m pip install -q --no-warn-conflicts "numpy<2" "onnxruntime>=1.17,<1.24"
ROOT=$("$VENV/bin/python" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("pytriton").submodule_search_locations[0]) / "tritonserver")')
VER=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
STUB="$ROOT/python_backend_stubs/$VER/triton_python_backend_stub"
[ -x "$ROOT/bin/tritonserver" ] || { echo "no tritonserver binary in $ROOT" >&2; exit 1; }
[ -f "$STUB" ] || { echo "no Python-backend stub for Python $VER in $ROOT" >&2; exit 1; }
cp "$STUB" "$ROOT/backends/python/triton_python_backend_stub"
chmod +x "$ROOT/backends/python/triton_python_backend_stub"
echo "tritonserver: $ROOT/bin/tritonserver (Python $VER stub, venv $VENV)"
