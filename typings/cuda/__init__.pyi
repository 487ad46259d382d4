# Local type stubs for the part of cuda-python (cuda.bindings.runtime) that edgeood calls.
# cuda-python ships Cython modules without .pyi files; these signatures are copied from the
# functions' own docstrings (tests/runtime/test_cuda_util.py checks them against the installed module).
